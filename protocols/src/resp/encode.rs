//! Command encoding: RESP arrays of bulk strings, as every Redis command is sent.

/// Appends `t`, the decimal `n` and CR LF (a length or count header), without allocating.
pub(crate) fn push_header(out: &mut Vec<u8>, t: u8, n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push(t);
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends one bulk string holding `prefix` followed by `arg`.
pub(crate) fn push_bulk(out: &mut Vec<u8>, prefix: &[u8], arg: &[u8]) {
    push_header(out, b'$', prefix.len() + arg.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

/// Appends the command `args` (name first) to `out` as a RESP array of bulk strings.
///
/// ```
/// let mut out = Vec::new();
/// ringman_protocols::resp::encode_command(&mut out, &[b"GET", b"k"]);
/// assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
/// ```
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.reserve(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    push_header(out, b'*', args.len());
    for a in args {
        push_bulk(out, &[], a);
    }
}

/// A value usable as a command argument: bytes, strings and numbers (sent in decimal).
pub trait Arg {
    /// Appends the argument's bytes to `out`.
    fn write_arg(&self, out: &mut Vec<u8>);
}

impl Arg for [u8] {
    fn write_arg(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl Arg for str {
    fn write_arg(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl Arg for String {
    fn write_arg(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl Arg for Vec<u8> {
    fn write_arg(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl<const N: usize> Arg for [u8; N] {
    fn write_arg(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl<T: Arg + ?Sized> Arg for &T {
    fn write_arg(&self, out: &mut Vec<u8>) {
        (**self).write_arg(out);
    }
}

macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            fn write_arg(&self, out: &mut Vec<u8>) {
                use std::io::Write;
                // Writing to a Vec cannot fail.
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
int_arg!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize);

impl Arg for f64 {
    /// Redis reads `inf`, `-inf` and decimals; NaN is refused by the server.
    fn write_arg(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = match *self {
            f64::INFINITY => write!(out, "inf"),
            f64::NEG_INFINITY => write!(out, "-inf"),
            d => write!(out, "{d:?}"),
        };
    }
}

/// A command being built: its arguments, and which of them are keys.
///
/// Arguments are stored back to back in one buffer. Keys ([`Cmd::key`]) get the client's
/// key prefix when the command is encoded with [`Cmd::encode_prefixed`].
///
/// ```
/// use ringman_protocols::resp::Cmd;
/// let cmd = Cmd::new("SET").key("user:1").arg("alice").arg("EX").arg(60);
/// let mut out = Vec::new();
/// cmd.encode_prefixed(b"app:", &mut out);
/// assert_eq!(out, b"*5\r\n$3\r\nSET\r\n$10\r\napp:user:1\r\n$5\r\nalice\r\n$2\r\nEX\r\n$2\r\n60\r\n");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmd {
    data: Vec<u8>,
    /// End offset in `data` of each argument, and whether it is a key.
    args: Vec<(usize, bool)>,
}

impl Cmd {
    /// A command named `name` (`"GET"`, `"HSET"`), with no arguments yet.
    pub fn new(name: impl Arg) -> Cmd {
        Cmd::default().arg(name)
    }

    /// Appends an argument.
    pub fn arg(mut self, a: impl Arg) -> Cmd {
        self.push(a, false);
        self
    }

    /// Appends a key: an argument that gets the key prefix.
    pub fn key(mut self, k: impl Arg) -> Cmd {
        self.push(k, true);
        self
    }

    /// Appends an argument in place (for loops).
    pub fn push_arg(&mut self, a: impl Arg) -> &mut Cmd {
        self.push(a, false);
        self
    }

    /// Appends a key in place (for loops).
    pub fn push_key(&mut self, k: impl Arg) -> &mut Cmd {
        self.push(k, true);
        self
    }

    fn push(&mut self, a: impl Arg, key: bool) {
        a.write_arg(&mut self.data);
        self.args.push((self.data.len(), key));
    }

    /// The number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// True when the command has not even a name.
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// The arguments (the name first) and whether each is a key.
    pub fn args(&self) -> impl Iterator<Item = (&[u8], bool)> + '_ {
        let mut start = 0;
        self.args.iter().map(move |&(end, key)| {
            let a = &self.data[start..end];
            start = end;
            (a, key)
        })
    }

    /// Appends the command to `out`, keys unprefixed.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_prefixed(&[], out);
    }

    /// Appends the command to `out`, with `prefix` in front of every key.
    pub fn encode_prefixed(&self, prefix: &[u8], out: &mut Vec<u8>) {
        out.reserve(16 + self.data.len() + self.args.len() * (16 + prefix.len()));
        push_header(out, b'*', self.args.len());
        for (a, key) in self.args() {
            push_bulk(out, if key { prefix } else { &[] }, a);
        }
    }

    /// The command encoded, keys unprefixed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}
