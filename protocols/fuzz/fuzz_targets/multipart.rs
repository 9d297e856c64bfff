#![no_main]
//! Streaming multipart/form-data parser over arbitrary bytes and splits. Checks: no panic;
//! no empty data piece; a split feed reports the same events and outcome as a whole feed;
//! the one-shot `parse_multipart` and the in-memory `FormCollector` agree with the events.
use ringman_protocols::http::{
    parse_multipart, FormCollector, FormError, MultipartEvent, MultipartParser, UploadConfig,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Part { name: Option<String>, filename: Option<String>, ct: Option<String>, raw: Vec<u8> },
    Data(Vec<u8>),
    PartEnd,
    End,
}

fn run(pieces: &[&[u8]], boundary: &str, limit: usize) -> (Vec<Ev>, Result<(), FormError>) {
    let mut p = MultipartParser::new(boundary).expect("valid boundary").header_limit(limit);
    let mut evs: Vec<Ev> = Vec::new();
    for piece in pieces {
        let r = p.push(piece, |ev| {
            match ev {
                MultipartEvent::Part(h) => evs.push(Ev::Part {
                    name: h.name.map(str::to_owned),
                    filename: h.filename.map(str::to_owned),
                    ct: h.content_type.map(str::to_owned),
                    raw: h.raw.to_vec(),
                }),
                MultipartEvent::Data(d) => {
                    assert!(!d.is_empty(), "empty data piece");
                    match evs.last_mut() {
                        Some(Ev::Data(v)) => v.extend_from_slice(d),
                        _ => evs.push(Ev::Data(d.to_vec())),
                    }
                }
                MultipartEvent::PartEnd => evs.push(Ev::PartEnd),
                MultipartEvent::End => evs.push(Ev::End),
            }
            Ok::<_, FormError>(())
        });
        if let Err(e) = r {
            assert_eq!(p.finish(), Err(e.clone()), "errors are sticky");
            return (evs, Err(e));
        }
    }
    (evs, p.finish())
}

const BOUNDARIES: [&str; 5] = ["b", "-", "ab", "a\tb c", "0123456789"];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else { return };
    let boundary = BOUNDARIES[seed as usize % BOUNDARIES.len()];
    let step = 1 + (seed as usize / BOUNDARIES.len()) % 11;
    let limit = if seed & 0x80 != 0 { 24 } else { 16 * 1024 };
    let chunks: Vec<&[u8]> = body.chunks(step).collect();
    let whole = run(&[body], boundary, limit);
    let split = run(&chunks, boundary, limit);
    assert_eq!(whole, split);

    if limit != 16 * 1024 {
        return;
    }
    // The one-shot parser: same outcome, same parts.
    match (parse_multipart(body, boundary), &whole.1) {
        (Ok(parts), Ok(())) => {
            let starts = whole.0.iter().filter(|e| matches!(e, Ev::Part { .. })).count();
            assert_eq!(parts.len(), starts);
            let mut i = 0;
            for e in &whole.0 {
                match e {
                    Ev::Part { name, filename, raw, .. } => {
                        assert_eq!(parts[i].name, name.as_deref());
                        assert_eq!(parts[i].filename, filename.as_deref());
                        assert_eq!(parts[i].headers, &raw[..]);
                        i += 1;
                    }
                    Ev::Data(d) => assert_eq!(parts[i - 1].data, &d[..]),
                    Ev::PartEnd | Ev::End => {}
                }
            }
        }
        (Err(a), Err(b)) => assert_eq!(&a, b),
        (a, b) => panic!("parse_multipart {a:?} but streaming {b:?}"),
    }
    // The collector, in memory only: same outcome, every part kept.
    let mut cfg = UploadConfig::default();
    cfg.spill_threshold = usize::MAX;
    let mut c = FormCollector::new(boundary, &cfg).expect("valid boundary");
    let collected = chunks.iter().try_for_each(|piece| c.push(piece)).and_then(|()| c.finish());
    match (collected, &whole.1) {
        (Ok(form), Ok(())) => {
            let starts = whole.0.iter().filter(|e| matches!(e, Ev::Part { .. })).count();
            assert_eq!(form.fields().len() + form.files().len(), starts);
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("collector {a:?} but streaming {b:?}"),
    }
});
