//! Request bodies of HTML forms: `application/x-www-form-urlencoded` (also query strings)
//! and `multipart/form-data`, with file uploads spilled to temporary files ([`FormData`]).

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::multipart::{MultipartEvent, MultipartParser, DEFAULT_MAX_PARTS, DEFAULT_PART_HEADER_LIMIT};
use super::Request;

/// Why a multipart body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// The body does not follow RFC 7578 / RFC 2046 multipart syntax.
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
    /// More parts than the limit (1024 by default, Workerman's `maxFileUploads`).
    #[error("more than {0} multipart parts")]
    TooManyParts(usize),
    /// The boundary is empty or contains CR or LF.
    #[error("invalid multipart boundary")]
    InvalidBoundary,
    /// A part's header block is larger than the limit (in bytes).
    #[error("multipart part headers larger than {0} bytes")]
    PartHeadersTooLarge(usize),
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decodes `%XX` escapes (and `+` as space when `plus_as_space`), borrowing when there is
/// nothing to decode. Malformed escapes are kept literally.
///
/// ```
/// use ringman_protocols::http::percent_decode;
/// assert_eq!(percent_decode(b"a%20b+c", true), &b"a b c"[..]);
/// assert_eq!(percent_decode(b"100%", false), &b"100%"[..]);
/// ```
pub fn percent_decode(input: &[u8], plus_as_space: bool) -> Cow<'_, [u8]> {
    if !input.iter().any(|&b| b == b'%' || (plus_as_space && b == b'+')) {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => match (input.get(i + 1).and_then(|&b| hex(b)), input.get(i + 2).and_then(|&b| hex(b))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_as_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

fn lossy(c: Cow<'_, [u8]>) -> Cow<'_, str> {
    match c {
        Cow::Borrowed(b) => String::from_utf8_lossy(b),
        Cow::Owned(v) => match String::from_utf8(v) {
            Ok(s) => Cow::Owned(s),
            Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        },
    }
}

/// Iterator over the `(name, value)` pairs of a urlencoded string; see [`parse_urlencoded`].
#[derive(Debug, Clone)]
pub struct UrlEncoded<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for UrlEncoded<'a> {
    type Item = (Cow<'a, str>, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let end = memchr::memchr(b'&', self.rest).unwrap_or(self.rest.len());
            let pair = &self.rest[..end];
            self.rest = self.rest.get(end + 1..).unwrap_or(b"");
            if pair.is_empty() {
                continue;
            }
            let (n, v) = match memchr::memchr(b'=', pair) {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            return Some((lossy(percent_decode(n, true)), lossy(percent_decode(v, true))));
        }
    }
}

/// Parses `application/x-www-form-urlencoded` data (a POST body or a query string) lazily
/// into decoded `(name, value)` pairs; invalid UTF-8 is replaced with U+FFFD.
///
/// ```
/// use ringman_protocols::http::parse_urlencoded;
/// let v: Vec<_> = parse_urlencoded(b"a=1&b=x+y%21&&c").collect();
/// assert_eq!(v, [("a".into(), "1".into()), ("b".into(), "x y!".into()), ("c".into(), "".into())]);
/// ```
pub fn parse_urlencoded(input: &[u8]) -> UrlEncoded<'_> {
    UrlEncoded { rest: input }
}

/// The `boundary` parameter of a `multipart/form-data` content type.
///
/// ```
/// use ringman_protocols::http::boundary_from_content_type;
/// assert_eq!(boundary_from_content_type("multipart/form-data; boundary=\"ab c\""), Some("ab c"));
/// assert_eq!(boundary_from_content_type("text/plain; boundary=x"), None);
/// ```
pub fn boundary_from_content_type(ct: &str) -> Option<&str> {
    let mut params = ct.split(';');
    let mime = params.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim();
        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
        (!v.is_empty() && v.len() <= 70 && !v.bytes().any(|b| b == b'\r' || b == b'\n')).then_some(v)
    })
}

/// One part of a `multipart/form-data` body, borrowed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// The `name` parameter of `Content-Disposition`.
    pub name: Option<&'a str>,
    /// The `filename` parameter, for file uploads (not sanitised: never use it as a path).
    pub filename: Option<&'a str>,
    /// The part's `Content-Type`.
    pub content_type: Option<&'a str>,
    /// The part's raw header lines.
    pub headers: &'a [u8],
    /// The part's content.
    pub data: &'a [u8],
}

/// Splits an in-memory `multipart/form-data` body into its parts (RFC 7578), borrowed from
/// it. The preamble and epilogue are ignored; the closing delimiter is required. Limits are
/// those of [`MultipartParser`](super::MultipartParser)'s defaults (1024 parts, 16 KiB of
/// headers per part); for large bodies or uploads see [`FormData`].
///
/// ```
/// use ringman_protocols::http::parse_multipart;
/// let body = b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XX--\r\n";
/// let parts = parse_multipart(body, "XX").unwrap();
/// assert_eq!((parts[0].name, parts[0].data), (Some("a"), &b"1"[..]));
/// ```
pub fn parse_multipart<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, FormError> {
    super::multipart::parse_whole(body, boundary)
}

/// How [`FormData`] collects a request body: where and when file uploads go to disk, and
/// the multipart limits.
///
/// ```
/// use ringman_protocols::http::UploadConfig;
/// let mut cfg = UploadConfig::default();
/// cfg.spill_threshold = 1 << 20; // keep files up to 1 MiB in memory
/// cfg.tmp_dir = std::env::temp_dir().join("uploads");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UploadConfig {
    /// A file part larger than this many bytes is written to a temporary file; smaller ones
    /// stay in memory. Default 64 KiB.
    pub spill_threshold: usize,
    /// Directory of the temporary files (Workerman's `upload_tmp_dir`). Default
    /// [`std::env::temp_dir`].
    pub tmp_dir: PathBuf,
    /// Most parts in one body (fields and files). Default 1024 (Workerman's
    /// `maxFileUploads`).
    pub max_parts: usize,
    /// Largest header block of one part. Default 16 KiB.
    pub max_part_headers: usize,
}

impl Default for UploadConfig {
    fn default() -> UploadConfig {
        UploadConfig {
            spill_threshold: 64 * 1024,
            tmp_dir: std::env::temp_dir(),
            max_parts: DEFAULT_MAX_PARTS,
            max_part_headers: DEFAULT_PART_HEADER_LIMIT,
        }
    }
}

/// Why a form could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The request is neither `multipart/form-data` with a boundary nor
    /// `application/x-www-form-urlencoded`.
    #[error("not a form content type")]
    NotAForm,
    /// The multipart body is malformed or over a limit.
    #[error(transparent)]
    Form(#[from] FormError),
    /// No temporary file could be created.
    #[error("cannot create a temporary file in {dir}: {source}")]
    CreateTemp {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Writing to a temporary file failed.
    #[error("cannot write temporary file {path}: {source}")]
    Write {
        /// The temporary file (already removed).
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// [`UploadedFile::persist`] failed; the file is handed back unchanged.
#[derive(Debug, thiserror::Error)]
#[error("cannot move the upload to {to}: {source}")]
pub struct PersistError {
    /// The destination.
    pub to: PathBuf,
    /// The cause.
    pub source: io::Error,
    /// The upload, still usable (and still removed on drop if it is a temporary file).
    pub file: Box<UploadedFile>,
}

/// A temporary file path removed on drop.
#[derive(Debug)]
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.0);
        }
    }
}

impl TempPath {
    /// Gives up the removal on drop.
    fn disarm(mut self) -> PathBuf {
        std::mem::take(&mut self.0)
    }
}

#[derive(Debug)]
enum Stored {
    Memory(Vec<u8>),
    Disk(TempPath),
}

/// A file part of a form (a part whose `Content-Disposition` has a `filename`; a part whose
/// `Content-Disposition` is not UTF-8 counts as a nameless text field): in memory when small, else in a
/// temporary file (created with `O_EXCL`, mode 0600, unpredictable name
/// `ringman.upload.*`) that is removed when this value is dropped, unless
/// [`persist`](Self::persist)ed.
#[derive(Debug)]
pub struct UploadedFile {
    field_name: String,
    file_name: String,
    content_type: Option<String>,
    size: u64,
    stored: Stored,
}

impl UploadedFile {
    /// The form field's `name` (empty when the part had none).
    pub fn field_name(&self) -> &str {
        &self.field_name
    }

    /// The `filename` the client sent, **unsanitised**: it may hold `../`, slashes, control
    /// characters or anything else. Never use it as a path. It may be empty (a form's empty
    /// file input).
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// The part's `Content-Type`, as sent.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// Size of the content in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The temporary file holding the content, when it was spilled to disk.
    pub fn path(&self) -> Option<&Path> {
        match &self.stored {
            Stored::Disk(t) => Some(&t.0),
            Stored::Memory(_) => None,
        }
    }

    /// The content, when it was kept in memory.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.stored {
            Stored::Memory(v) => Some(v),
            Stored::Disk(_) => None,
        }
    }

    /// Moves the content to `to` (replacing any file there), so that it outlives this value:
    /// a temporary file is renamed (or copied then removed, across file systems), in-memory
    /// content is written. On failure the upload is handed back in the error.
    pub fn persist(self, to: impl AsRef<Path>) -> Result<(), PersistError> {
        let to = to.as_ref();
        let result = match &self.stored {
            Stored::Memory(v) => fs::write(to, v),
            Stored::Disk(t) => match fs::rename(&t.0, to) {
                Err(e) if e.kind() == io::ErrorKind::CrossesDevices => fs::copy(&t.0, to).map(drop),
                r => r,
            },
        };
        match result {
            Ok(()) => {
                if let Stored::Disk(t) = self.stored {
                    // Renamed: nothing left to remove. Copied: the temporary file goes now.
                    let p = t.disarm();
                    if p.exists() {
                        let _ = fs::remove_file(p);
                    }
                }
                Ok(())
            }
            Err(source) => Err(PersistError { to: to.to_path_buf(), source, file: Box::new(self) }),
        }
    }
}

/// A text field of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormField {
    /// The field's name (empty when absent).
    pub name: String,
    /// The field's value, as sent (percent-decoded for urlencoded forms).
    pub value: Vec<u8>,
}

impl FormField {
    /// The value as UTF-8, when it is.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

/// A form collected from a request body: text fields in memory (bounded by the body, hence
/// by the worker's `max_package_size`), file uploads in memory or spilled to temporary
/// files (see [`UploadConfig`]). Temporary files are removed when the
/// `FormData` (or the [`UploadedFile`] taken out of it) is dropped.
///
/// ```
/// use ringman_protocols::http::{FormData, Request, UploadConfig};
/// let body = "--XX\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHi\r\n\
///             --XX\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"a.txt\"\r\n\r\n\
///             text\r\n--XX--\r\n";
/// let raw = format!(
///     "POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XX\r\n\
///      Content-Length: {}\r\n\r\n{body}",
///     body.len()
/// );
/// let req = Request::parse(raw.as_bytes()).unwrap();
/// let form = FormData::from_request(&req, &UploadConfig::default()).unwrap();
/// assert_eq!(form.field("title"), Some("Hi"));
/// let doc = form.file("doc").unwrap();
/// assert_eq!((doc.file_name(), doc.bytes()), ("a.txt", Some(&b"text"[..])));
/// ```
#[derive(Debug, Default)]
pub struct FormData {
    fields: Vec<FormField>,
    files: Vec<UploadedFile>,
}

impl FormData {
    /// Collects the form of a request: `multipart/form-data` (with a boundary) or
    /// `application/x-www-form-urlencoded`; anything else is [`UploadError::NotAForm`].
    pub fn from_request(req: &Request<'_>, cfg: &UploadConfig) -> Result<FormData, UploadError> {
        let ct = req.content_type().ok_or(UploadError::NotAForm)?;
        if let Some(boundary) = boundary_from_content_type(ct) {
            return FormData::from_multipart(req.body(), boundary, cfg);
        }
        let mime = ct.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            let fields = parse_urlencoded(req.body())
                .map(|(n, v)| FormField { name: n.into_owned(), value: v.into_owned().into_bytes() })
                .collect();
            return Ok(FormData { fields, files: Vec::new() });
        }
        Err(UploadError::NotAForm)
    }

    /// Collects a whole `multipart/form-data` body.
    pub fn from_multipart(body: &[u8], boundary: &str, cfg: &UploadConfig) -> Result<FormData, UploadError> {
        let mut c = FormCollector::new(boundary, cfg)?;
        c.push(body)?;
        c.finish()
    }

    /// The text fields, in order.
    pub fn fields(&self) -> &[FormField] {
        &self.fields
    }

    /// The first text field named `name`, when its value is UTF-8.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|f| f.name == name).and_then(FormField::as_str)
    }

    /// The file uploads, in order.
    pub fn files(&self) -> &[UploadedFile] {
        &self.files
    }

    /// The first file uploaded under field `name`.
    pub fn file(&self, name: &str) -> Option<&UploadedFile> {
        self.files.iter().find(|f| f.field_name == name)
    }

    /// Takes the first file uploaded under field `name` out of the form (to
    /// [`persist`](UploadedFile::persist) it, for instance).
    pub fn take_file(&mut self, name: &str) -> Option<UploadedFile> {
        let i = self.files.iter().position(|f| f.field_name == name)?;
        Some(self.files.remove(i))
    }

    /// The fields and the files.
    pub fn into_parts(self) -> (Vec<FormField>, Vec<UploadedFile>) {
        (self.fields, self.files)
    }
}

/// The part being collected.
enum Current {
    /// A part to skip (none: before the first part).
    None,
    Field(FormField),
    File {
        file: UploadedFile,
        writer: Option<BufWriter<File>>,
    },
}

/// Builds a [`FormData`] from a `multipart/form-data` body pushed in pieces of any size, as
/// the [`MultipartParser`] reads it: file content is written to the temporary file piece
/// by piece once it passes the threshold, never gathered whole in memory.
///
/// ```
/// use ringman_protocols::http::{FormCollector, UploadConfig};
/// let body = b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XX--\r\n";
/// let mut c = FormCollector::new("XX", &UploadConfig::default()).unwrap();
/// for piece in body.chunks(5) {
///     c.push(piece).unwrap();
/// }
/// assert_eq!(c.finish().unwrap().field("a"), Some("1"));
/// ```
pub struct FormCollector {
    parser: MultipartParser,
    threshold: usize,
    tmp_dir: PathBuf,
    form: FormData,
    current: Current,
}

impl std::fmt::Debug for FormCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormCollector").field("parser", &self.parser).field("form", &self.form).finish()
    }
}

impl FormCollector {
    /// A collector for a body with this boundary.
    pub fn new(boundary: &str, cfg: &UploadConfig) -> Result<FormCollector, FormError> {
        let parser = MultipartParser::new(boundary)?.max_parts(cfg.max_parts).header_limit(cfg.max_part_headers);
        Ok(FormCollector {
            parser,
            threshold: cfg.spill_threshold,
            tmp_dir: cfg.tmp_dir.clone(),
            form: FormData::default(),
            current: Current::None,
        })
    }

    /// Parses the next piece of the body. After an error the collector should be dropped
    /// (which removes its temporary files).
    pub fn push(&mut self, piece: &[u8]) -> Result<(), UploadError> {
        let FormCollector { parser, threshold, tmp_dir, form, current } = self;
        parser.push(piece, |ev| {
            match ev {
                MultipartEvent::Part(head) => {
                    let name = head.name.unwrap_or_default().to_owned();
                    *current = match head.filename {
                        Some(f) => Current::File {
                            file: UploadedFile {
                                field_name: name,
                                file_name: f.to_owned(),
                                content_type: head.content_type.map(str::to_owned),
                                size: 0,
                                stored: Stored::Memory(Vec::new()),
                            },
                            writer: None,
                        },
                        None => Current::Field(FormField { name, value: Vec::new() }),
                    };
                }
                MultipartEvent::Data(d) => match current {
                    Current::None => {}
                    Current::Field(f) => f.value.extend_from_slice(d),
                    Current::File { file, writer } => {
                        file.size += d.len() as u64;
                        write_file_data(file, writer, d, *threshold, tmp_dir)?;
                    }
                },
                MultipartEvent::PartEnd => match std::mem::replace(current, Current::None) {
                    Current::None => {}
                    Current::Field(f) => form.fields.push(f),
                    Current::File { file, writer } => {
                        if let (Some(w), Stored::Disk(t)) = (writer, &file.stored) {
                            w.into_inner()
                                .map_err(|e| UploadError::Write { path: t.0.clone(), source: e.into_error() })?;
                        }
                        form.files.push(file);
                    }
                },
                MultipartEvent::End => {}
            }
            Ok::<_, UploadError>(())
        })
    }

    /// Checks that the body was complete and returns the form.
    pub fn finish(self) -> Result<FormData, UploadError> {
        self.parser.finish()?;
        Ok(self.form)
    }
}

/// Appends `d` to a file part: in memory up to `threshold` bytes, then in a new temporary
/// file (what was in memory first).
fn write_file_data(
    file: &mut UploadedFile,
    writer: &mut Option<BufWriter<File>>,
    d: &[u8],
    threshold: usize,
    tmp_dir: &Path,
) -> Result<(), UploadError> {
    if let Stored::Memory(v) = &mut file.stored {
        if v.len() + d.len() <= threshold {
            v.extend_from_slice(d);
            return Ok(());
        }
        let (f, path) = create_temp(tmp_dir)?;
        let mut w = BufWriter::with_capacity(64 * 1024, f);
        let held = std::mem::take(v);
        file.stored = Stored::Disk(path);
        if let Err(e) = w.write_all(&held) {
            return Err(write_error(file, e));
        }
        *writer = Some(w);
    }
    if let Some(w) = writer {
        if let Err(e) = w.write_all(d) {
            return Err(write_error(file, e));
        }
    }
    Ok(())
}

fn write_error(file: &UploadedFile, source: io::Error) -> UploadError {
    UploadError::Write { path: file.path().map(Path::to_path_buf).unwrap_or_default(), source }
}

/// 64 unpredictable bits without a dependency: SipHash keyed by the standard library's
/// per-process random keys, over a counter and the clock.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

/// Creates a new file `ringman.upload.<random>` in `dir`: never an existing file or link
/// (`O_EXCL`), readable by its owner only.
fn create_temp(dir: &Path) -> Result<(File, TempPath), UploadError> {
    let mut last = None;
    for _ in 0..8 {
        let path = dir.join(format!("ringman.upload.{:016x}{:016x}", random_u64(), random_u64()));
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        match opts.open(&path) {
            Ok(f) => return Ok((f, TempPath(path))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(source) => return Err(UploadError::CreateTemp { dir: dir.to_path_buf(), source }),
        }
    }
    let source = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
    Err(UploadError::CreateTemp { dir: dir.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_fields_and_a_file() {
        let body = b"preamble\r\n--b0undary\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHello\r\n--b0undary\r\nContent-Disposition: form-data; name=\"tags\"\r\n\r\na,b\r\nc\r\n--b0undary\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a;b.txt\"\r\nContent-Type: text/plain\r\n\r\nline1\r\n--not-the-boundary\r\n\r\n--b0undary--\r\nepilogue";
        let parts = parse_multipart(body, "b0undary").unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!((parts[0].name, parts[0].data), (Some("title"), &b"Hello"[..]));
        assert_eq!((parts[1].name, parts[1].data), (Some("tags"), &b"a,b\r\nc"[..]));
        assert_eq!(parts[2].name, Some("upload"));
        assert_eq!(parts[2].filename, Some("a;b.txt"));
        assert_eq!(parts[2].content_type, Some("text/plain"));
        assert_eq!(parts[2].data, b"line1\r\n--not-the-boundary\r\n");
        assert_eq!(parts[0].filename, None);
    }

    #[test]
    fn malformed_multipart() {
        assert!(parse_multipart(b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx", "b").is_err());
        assert!(parse_multipart(b"nothing here", "b").is_err());
        assert!(parse_multipart(b"--bX", "b").is_err());
        assert_eq!(parse_multipart(b"--b--", "b").unwrap(), vec![]);
        let mut many = Vec::new();
        for _ in 0..=crate::http::DEFAULT_MAX_PARTS {
            many.extend_from_slice(b"--b\r\n\r\nx\r\n");
        }
        many.extend_from_slice(b"--b--");
        assert_eq!(parse_multipart(&many, "b"), Err(FormError::TooManyParts(crate::http::DEFAULT_MAX_PARTS)));
    }

    #[test]
    fn urlencoded_edge_cases() {
        let v: Vec<_> = parse_urlencoded(b"%zz=%e2%9c%93&=e&k=%ff").collect();
        assert_eq!(v[0], ("%zz".into(), "\u{2713}".into()));
        assert_eq!(v[1], ("".into(), "e".into()));
        assert_eq!(v[2].1, "\u{fffd}");
        assert!(matches!(percent_decode(b"plain", true), Cow::Borrowed(_)));
        assert_eq!(percent_decode(b"%4", false), &b"%4"[..]);
    }
}

#[cfg(test)]
mod upload_tests {
    use super::*;

    /// A temporary directory removed on drop.
    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("ringman-form-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        fn entries(&self) -> Vec<PathBuf> {
            fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().path()).collect()
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn body(big: &[u8]) -> Vec<u8> {
        let mut b = b"--B\r\nContent-Disposition: form-data; name=\"t\"\r\n\r\nhello\r\n".to_vec();
        b.extend_from_slice(b"--B\r\nContent-Disposition: form-data; name=\"small\"; filename=\"../s.txt\"\r\n");
        b.extend_from_slice(b"Content-Type: text/plain\r\n\r\nsmall\r\n");
        b.extend_from_slice(b"--B\r\nContent-Disposition: form-data; name=\"big\"; filename=\"b.bin\"\r\n\r\n");
        b.extend_from_slice(big);
        b.extend_from_slice(b"\r\n--B--\r\n");
        b
    }

    fn config(dir: &Dir, threshold: usize) -> UploadConfig {
        UploadConfig { tmp_dir: dir.0.clone(), spill_threshold: threshold, ..UploadConfig::default() }
    }

    #[test]
    fn big_files_spill_small_ones_stay_in_memory() {
        let dir = Dir::new("spill");
        let big: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let body = body(&big);
        for step in [1, 13, 4096, body.len()] {
            let mut c = FormCollector::new("B", &config(&dir, 1000)).unwrap();
            for piece in body.chunks(step) {
                c.push(piece).unwrap();
            }
            let form = c.finish().unwrap();
            assert_eq!(form.field("t"), Some("hello"));
            let small = form.file("small").unwrap();
            assert_eq!(
                (small.file_name(), small.content_type(), small.size(), small.bytes()),
                ("../s.txt", Some("text/plain"), 5, Some(&b"small"[..]))
            );
            assert!(small.path().is_none());
            let f = form.file("big").unwrap();
            assert_eq!(f.size(), big.len() as u64);
            let path = f.path().unwrap().to_path_buf();
            assert!(path.starts_with(&dir.0));
            assert!(path.file_name().unwrap().to_str().unwrap().starts_with("ringman.upload."));
            assert_eq!(fs::read(&path).unwrap(), big);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            }
            drop(form);
            assert!(!path.exists());
            assert!(dir.entries().is_empty());
        }
    }

    #[test]
    fn threshold_is_inclusive_and_persist_moves() {
        let dir = Dir::new("persist");
        let big = vec![7u8; 1000];
        let mut form = FormData::from_multipart(&body(&big), "B", &config(&dir, 1000)).unwrap();
        assert!(form.file("big").unwrap().bytes().is_some(), "exactly the threshold stays in memory");
        let mut form2 = FormData::from_multipart(&body(&big), "B", &config(&dir, 999)).unwrap();
        let spilled = form2.take_file("big").unwrap();
        let tmp = spilled.path().unwrap().to_path_buf();
        let dest = dir.0.join("kept.bin");
        spilled.persist(&dest).unwrap();
        assert!(!tmp.exists());
        assert_eq!(fs::read(&dest).unwrap(), big);
        let dest2 = dir.0.join("kept-mem.bin");
        form.take_file("big").unwrap().persist(&dest2).unwrap();
        assert_eq!(fs::read(&dest2).unwrap(), big);
        drop((form, form2));
        assert_eq!(dir.entries().len(), 2);
        // A failed persist hands the file back, still on disk.
        let mut form3 = FormData::from_multipart(&body(&big), "B", &config(&dir, 10)).unwrap();
        let f = form3.take_file("big").unwrap();
        let err = f.persist(dir.0.join("no/such/dir/x")).unwrap_err();
        let tmp = err.file.path().unwrap().to_path_buf();
        assert!(tmp.exists());
        drop(err);
        assert!(!tmp.exists());
    }

    #[test]
    fn errors_remove_temporary_files() {
        let dir = Dir::new("errors");
        let big = vec![1u8; 5000];
        let mut truncated = body(&big);
        truncated.truncate(truncated.len() - 10);
        let e = FormData::from_multipart(&truncated, "B", &config(&dir, 100)).unwrap_err();
        assert!(matches!(e, UploadError::Form(FormError::Malformed("no closing delimiter"))), "{e}");
        assert!(dir.entries().is_empty());
        let mut cfg = config(&dir, 100);
        cfg.tmp_dir = dir.0.join("missing");
        let e = FormData::from_multipart(&body(&big), "B", &cfg).unwrap_err();
        assert!(matches!(e, UploadError::CreateTemp { .. }), "{e}");
        cfg.max_parts = 2;
        let e = FormData::from_multipart(&body(&big), "B", &cfg).unwrap_err();
        assert!(matches!(e, UploadError::Form(FormError::TooManyParts(2))), "{e}");
    }

    #[test]
    fn from_request_content_types() {
        let cfg = UploadConfig::default();
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 9\r\n\r\na=1&b=x+y";
        let req = Request::parse(raw).unwrap();
        let form = FormData::from_request(&req, &cfg).unwrap();
        assert_eq!((form.field("a"), form.field("b")), (Some("1"), Some("x y")));
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\na";
        let req = Request::parse(raw).unwrap();
        assert!(matches!(FormData::from_request(&req, &cfg), Err(UploadError::NotAForm)));
    }
}
