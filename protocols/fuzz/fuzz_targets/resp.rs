#![no_main]
// The RESP decoder: any split of the stream behaves as the whole (shared::check), `input`
// never panics, and every packet it announces parses with `Value::parse` to exactly its length.
mod shared;
use ringman_protocols::resp::{RespCodec, Value};
use ringman_protocols::{Decoder, Input};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shared::check(&ringman_protocols::resp::Resp, data);
    let mut codec = RespCodec::new();
    let mut rest = data;
    while let Ok(Input::Packet(n)) = codec.input(rest, 1 << 20) {
        assert!(n <= rest.len(), "a packet is announced only once complete");
        let parsed = Value::parse(&rest[..n]).map(|(_, len)| len);
        assert_eq!(parsed, Ok(n), "{:?}", String::from_utf8_lossy(&rest[..n]));
        rest = &rest[n..];
    }
});
