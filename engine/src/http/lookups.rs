//! A `WebServer`'s remembered lookups, per ring thread: request paths no file answers (a
//! request that falls through to the application does not pay a failed `openat2` each
//! time) and the open files other paths resolved to, with their metadata (a file is not
//! opened, examined and closed again for every request), both forgotten exactly when the
//! tree under the root or the file changes.
//!
//! # Exactness
//!
//! Every directory under the root carries an inotify watch for entries created, deleted or
//! moved, attribute changes (a `chmod` can make an unreadable file readable, or a readable
//! one not) and the directory's own removal or move. Any event of a directory forgets every
//! remembered path; one that creates or moves a directory, or a lost event
//! (`IN_Q_OVERFLOW`), first walks the tree again so new directories are watched too. A
//! remembered file is the same file the path names until such an event (it can only be
//! replaced, removed or renamed by a change of a directory entry). Its content and
//! attributes are watched on the file itself: the watch is on the inode, so it reports
//! writes, truncation and attribute changes made through any name (a hard link outside the
//! tree too), and such an event forgets the paths that named that file, which are looked
//! up (opened and examined) again at their next request. The metadata remembered with a
//! file is read after its watch was added, so no change falls between the two.
//!
//! The kernel queues an inotify event inside the system call that made the change, before
//! that call returns. So a change made before a client sent its request was queued before
//! the request's bytes arrived, hence before the completion that carries them was produced,
//! hence before the batch holding that completion was reaped. The queue is read (one
//! non-blocking `read`, usually `EAGAIN`) at the first remembered path looked up after each
//! reaped batch ([`crate::reactor::reaped_batches`]): no request is answered from memory
//! that a change made before it could have altered. A lookup is only remembered while the
//! watches exist: the one that sets them up is not (it ran before them).
//!
//! Not seen: changes on network filesystems made by other hosts, filesystems mounted under
//! the root later, and writes through a shared memory mapping of a file (inotify reports
//! none of them); `WebServer::negative_cache(false)` turns this off for such roots, and
//! every request then opens and examines its file.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::fs::Metadata;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Weak};

/// Remembered misses per root and thread; beyond this the set starts afresh (a client asking
/// for ever new paths gets failed lookups, nothing worse).
const MAX_PATHS: usize = 4096;

/// Remembered open files per root and thread (each holds a descriptor); beyond this the
/// map starts afresh.
const MAX_FILES: usize = 512;

/// What a path was found to name: an open regular file, its metadata and its MIME type (by
/// the name the path resolved to: a directory's path names its index file).
#[derive(Clone)]
pub(super) struct Found {
    pub(super) file: Rc<File>,
    pub(super) meta: Metadata,
    pub(super) mime: &'static str,
}

/// What is remembered of a path.
pub(super) enum Known {
    /// Nothing: look it up.
    Unknown,
    /// No file answers it.
    Missing,
    /// It names this file (its content may have changed: check it).
    Found(Found),
}

/// What each directory's watch reports. (Events on a directory's entries include
/// attribute changes of the files in it.)
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR
    | libc::IN_DONT_FOLLOW;

/// What the watch on each remembered file reports: its content written or truncated, its
/// attributes changed (mode, owner, times, link count).
const FILE_MASK: u32 = libc::IN_MODIFY | libc::IN_ATTRIB;

/// Size of `struct inotify_event` without its name.
const EVENT_HEADER: usize = 16;

/// One root's remembered lookups on this thread.
struct Lookups {
    /// The `WebServer`'s root (weak: an entry whose server is gone is dropped, closing its
    /// inotify instance, the next time an entry is made).
    root: Weak<PathBuf>,
    /// The root's path, for messages.
    path: PathBuf,
    /// The inotify instance watching the tree (`None`: it could not be set up; nothing is
    /// remembered).
    inotify: Option<File>,
    misses: HashSet<Box<[u8]>>,
    /// Remembered files and the watch descriptor of each file's own watch.
    files: HashMap<Box<[u8]>, (Found, i32)>,
    /// The watch descriptors of files (every other one is a directory's). A file's watch
    /// stays while the file lives (adding it again answers the same descriptor); they are
    /// all removed when everything is forgotten.
    file_watches: HashSet<i32>,
    /// Files whose watch reported a change, gathered while the queue is read.
    changed: Vec<i32>,
    /// The reaped batch after which the queue was last read.
    read_at: u64,
}

thread_local! {
    static LOOKUPS: RefCell<Vec<Lookups>> = const { RefCell::new(Vec::new()) };
}

/// What is remembered of `rel` under `root`, as of every change made before the completions
/// this thread is handling.
pub(super) fn known(root: &Arc<PathBuf>, rel: &[u8]) -> Known {
    LOOKUPS.with(|m| {
        let mut m = m.borrow_mut();
        let Some(e) = m.iter_mut().find(|e| std::ptr::eq(e.root.as_ptr(), Arc::as_ptr(root))) else {
            return Known::Unknown;
        };
        if e.misses.is_empty() && e.files.is_empty() {
            return Known::Unknown;
        }
        let now = crate::reactor::reaped_batches();
        if e.read_at != now {
            e.read_at = now;
            e.refresh();
        }
        if e.misses.contains(rel) {
            return Known::Missing;
        }
        e.files.get(rel).map_or(Known::Unknown, |(f, _)| Known::Found(f.clone()))
    })
}

/// Remembers that `rel` under `root` named no file (a lookup that failed for a reason only
/// a change of the tree can undo).
pub(super) fn record_miss(root: &Arc<PathBuf>, rel: &[u8]) {
    with_entry(root, |e| {
        if e.misses.len() >= MAX_PATHS {
            e.misses.clear();
        }
        e.misses.insert(rel.into());
    })
}

/// Remembers that `rel` under `root` named `found`'s file, once that file is watched (its
/// metadata is read again then: `found.meta` may predate the watch).
pub(super) fn record_found(root: &Arc<PathBuf>, rel: &[u8], found: &Found) {
    with_entry(root, |e| {
        if e.files.len() >= MAX_FILES {
            e.forget_files();
        }
        let Some(inotify) = e.inotify.as_ref() else { return };
        // The descriptor's own link names the open file's inode (followed like a symlink).
        let link = PathBuf::from(format!("/proc/self/fd/{}", found.file.as_raw_fd()));
        let wd = match crate::sys::inotify_watch(inotify.as_fd(), &link, FILE_MASK) {
            Ok(wd) => wd,
            Err(err) => {
                // (Out of watches, `max_user_watches`: the path is looked up every time.)
                log::debug!("WebServer {}: cannot watch a file ({err}); it is not remembered", e.path.display());
                return;
            }
        };
        e.file_watches.insert(wd);
        let Ok(meta) = found.file.metadata() else { return };
        e.files.insert(rel.into(), (Found { meta, ..found.clone() }, wd));
    })
}

/// Runs `f` on `root`'s entry if its watches are set up; else sets them up (the lookup
/// being recorded ran before them, so it is not remembered).
fn with_entry(root: &Arc<PathBuf>, f: impl FnOnce(&mut Lookups)) {
    LOOKUPS.with(|m| {
        let mut m = m.borrow_mut();
        match m.iter_mut().position(|e| std::ptr::eq(e.root.as_ptr(), Arc::as_ptr(root))) {
            Some(i) if m[i].inotify.is_some() => f(&mut m[i]),
            Some(_) => {}
            None => {
                m.retain(|e| e.root.strong_count() > 0);
                m.push(Lookups::watch(root));
            }
        }
    })
}

impl Lookups {
    fn watch(root: &Arc<PathBuf>) -> Lookups {
        let mut m = Lookups {
            root: Arc::downgrade(root),
            path: root.to_path_buf(),
            inotify: None,
            misses: HashSet::new(),
            files: HashMap::new(),
            file_watches: HashSet::new(),
            changed: Vec::new(),
            read_at: crate::reactor::reaped_batches(),
        };
        match crate::sys::inotify() {
            Ok(fd) => {
                let f = File::from(fd);
                match watch_tree(&f, &m.path) {
                    Ok(()) => m.inotify = Some(f),
                    Err(e) => log::warn!(
                        "WebServer {}: cannot watch the tree ({e}); lookups are not remembered",
                        m.path.display()
                    ),
                }
            }
            Err(e) => log::warn!("WebServer {}: no inotify ({e}); lookups are not remembered", m.path.display()),
        }
        m
    }

    /// Reads the queued events: a file's forgets the paths that named it; any other forgets
    /// every path; a new or moved directory, or lost events, first has the tree watched
    /// again.
    fn refresh(&mut self) {
        let Some(f) = self.inotify.as_mut() else { return };
        let mut buf = [0u8; 4096];
        let (mut any, mut rewalk) = (false, false);
        self.changed.clear();
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    any |= sort_events(&buf[..n], &mut self.file_watches, &mut self.changed);
                    rewalk |= needs_rewalk(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!(
                        "WebServer {}: inotify read failed ({e}); lookups are no longer remembered",
                        self.path.display()
                    );
                    self.inotify = None;
                    self.forget();
                    return;
                }
            }
        }
        if rewalk {
            if let Err(e) = watch_tree(f, &self.path) {
                log::warn!(
                    "WebServer {}: cannot watch the tree ({e}); lookups are no longer remembered",
                    self.path.display()
                );
                self.inotify = None;
            }
        }
        if any || self.inotify.is_none() {
            self.forget();
        } else if !self.changed.is_empty() {
            let changed = &self.changed;
            self.files.retain(|_, (_, wd)| !changed.contains(wd));
        }
    }

    /// Forgets every path, and removes the files' watches (a file remembered again is
    /// watched again).
    fn forget(&mut self) {
        self.misses.clear();
        self.forget_files();
    }

    /// Forgets the remembered files and removes their watches (so watches never outnumber
    /// the files remembered since the last time).
    fn forget_files(&mut self) {
        self.files.clear();
        if let Some(f) = &self.inotify {
            for wd in self.file_watches.drain() {
                // (The removal queues an `IN_IGNORED` event, which changes nothing.)
                let _ = crate::sys::inotify_unwatch(f.as_fd(), wd);
            }
        }
    }
}

/// Sorts a buffer of whole `struct inotify_event`s: the watch descriptors of files whose
/// watch reported a change go to `changed`; returns whether any other event (a directory's,
/// or lost events) asks for everything to be forgotten. `IN_IGNORED` (a watch removed, by
/// us or because its inode is gone) changes nothing by itself: a file's watch is dropped
/// from `file_watches`; a directory removed or unmounted reported that first.
fn sort_events(mut buf: &[u8], file_watches: &mut HashSet<i32>, changed: &mut Vec<i32>) -> bool {
    let word = |b: &[u8], at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut all = false;
    while buf.len() >= EVENT_HEADER {
        let (wd, mask) = (word(buf, 0) as i32, word(buf, 4));
        if mask & libc::IN_IGNORED != 0 {
            file_watches.remove(&wd);
        } else if mask & libc::IN_Q_OVERFLOW == 0 && file_watches.contains(&wd) {
            changed.push(wd);
        } else {
            all = true;
        }
        let len = word(buf, 12) as usize;
        buf = buf.get(EVENT_HEADER + len..).unwrap_or(&[]);
    }
    all
}

/// Whether a buffer of whole `struct inotify_event`s holds one that asks for the tree to be
/// walked again: a directory created or moved in, or lost events.
fn needs_rewalk(mut buf: &[u8]) -> bool {
    let word = |b: &[u8], at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    while buf.len() >= EVENT_HEADER {
        let mask = word(buf, 4);
        if mask & libc::IN_Q_OVERFLOW != 0
            || (mask & libc::IN_ISDIR != 0 && mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0)
        {
            return true;
        }
        let len = word(buf, 12) as usize;
        buf = buf.get(EVENT_HEADER + len..).unwrap_or(&[]);
    }
    false
}

/// Watches `root` and every directory below it (symbolic links are not followed: what they
/// lead to inside the root is watched as itself, what lies outside is never served). A
/// directory that vanished during the walk is skipped (its removal is an event).
fn watch_tree(f: &File, root: &Path) -> std::io::Result<()> {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        match crate::sys::inotify_watch(f.as_fd(), &d, MASK) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) && d.as_path() != root => continue,
            Err(e) => return Err(e),
        }
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(mask: u32, name: &[u8]) -> Vec<u8> {
        let len = name.len().div_ceil(16) * 16;
        let mut b = Vec::new();
        b.extend_from_slice(&1i32.to_ne_bytes());
        b.extend_from_slice(&mask.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&(len as u32).to_ne_bytes());
        b.extend_from_slice(name);
        b.resize(EVENT_HEADER + len, 0);
        b
    }

    /// A scratch directory under the system's temporary directory, removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("ringman-lookups-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(p.join("sub")).unwrap();
            Scratch(p)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn next_batch() {
        crate::reactor::reap_for_test();
    }

    fn missing(root: &Arc<PathBuf>, rel: &[u8]) -> bool {
        matches!(known(root, rel), Known::Missing)
    }

    /// A remembered file (with its metadata) is forgotten when a directory entry changes —
    /// the file replaced by a rename, its permissions changed, the file removed — and when
    /// its own content or attributes change, through any name: then only the paths that
    /// named it are forgotten, not other files or remembered misses.
    #[test]
    fn remembered_files_last_until_the_file_or_a_directory_entry_changes() {
        use std::os::unix::fs::FileExt;
        let s = Scratch::new("files");
        let outside = Scratch::new("files-outside");
        let root = Arc::new(s.0.clone());
        let p = |rel: &str| s.0.join(rel);
        std::fs::write(p("a.txt"), "one").unwrap();
        std::fs::write(p("b.txt"), "bbb").unwrap();
        std::fs::hard_link(p("a.txt"), outside.0.join("link.txt")).unwrap();
        let found = |rel: &str| {
            let file = File::open(p(rel)).unwrap();
            let meta = file.metadata().unwrap();
            Found { file: Rc::new(file), meta, mime: "text/plain" }
        };
        let remembered = |key: &[u8]| match known(&root, key) {
            Known::Found(f) => {
                let mut b = [0u8; 8];
                let n = f.file.read_at(&mut b, 0).unwrap();
                assert_eq!(f.meta.len(), f.file.metadata().unwrap().len(), "remembered metadata is current");
                Some(b[..n].to_vec())
            }
            _ => None,
        };
        record_found(&root, b"a.txt", &found("a.txt"));
        assert_eq!(remembered(b"a.txt"), None, "the lookup that set the watches up is not remembered");
        let change = |what: &str, f: &dyn Fn()| {
            record_found(&root, b"a.txt", &found("a.txt"));
            next_batch();
            assert!(remembered(b"a.txt").is_some(), "{what}: not remembered");
            f();
            next_batch();
            assert_eq!(remembered(b"a.txt"), None, "{what}: still remembered after the change");
        };
        // A file's own change forgets that file alone.
        let targeted = |what: &str, f: &dyn Fn()| {
            record_found(&root, b"b.txt", &found("b.txt"));
            record_miss(&root, b"missing.txt");
            change(what, f);
            assert_eq!(remembered(b"b.txt").as_deref(), Some(&b"bbb"[..]), "{what}: another file was forgotten");
            assert!(missing(&root, b"missing.txt"), "{what}: a miss was forgotten");
        };
        targeted("a write in place", &|| std::fs::write(p("a.txt"), "two").unwrap());
        targeted("a write through a hard link outside the tree", &|| {
            std::fs::OpenOptions::new()
                .append(true)
                .open(outside.0.join("link.txt"))
                .unwrap()
                .write_all_at(b"!", 3)
                .unwrap()
        });
        targeted("a truncation", &|| {
            std::fs::File::options().write(true).open(p("a.txt")).unwrap().set_len(1).unwrap()
        });
        targeted("new times", &|| {
            let when = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
            std::fs::File::options().write(true).open(outside.0.join("link.txt")).unwrap().set_modified(when).unwrap()
        });
        // Watches dropped by a full forget do not forget anything by themselves.
        change("replaced by a rename", &|| {
            std::fs::write(p("sub/new.txt"), "new").unwrap();
            std::fs::rename(p("sub/new.txt"), p("a.txt")).unwrap();
        });
        record_found(&root, b"a.txt", &found("a.txt"));
        next_batch();
        next_batch();
        assert_eq!(remembered(b"a.txt").as_deref(), Some(&b"new"[..]), "removed watches forgot a file");
        change("chmod", &|| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p("a.txt"), std::fs::Permissions::from_mode(0o600)).unwrap()
        });
        change("removed", &|| std::fs::remove_file(p("a.txt")).unwrap());
    }

    /// Every kind of change forgets what was remembered, seen at the first lookup after the
    /// next reaped batch; nothing is forgotten without a change; directories made after the
    /// watches were set up (created, moved in, several levels at once) are watched too.
    #[test]
    fn remembered_misses_last_until_the_tree_changes() {
        let s = Scratch::new("changes");
        let root = Arc::new(s.0.clone());
        let p = |rel: &str| s.0.join(rel);
        // The first miss sets the watches up and is not remembered (its lookup ran before).
        record_miss(&root, b"a.txt");
        assert!(!missing(&root, b"a.txt"));
        record_miss(&root, b"a.txt");
        assert!(missing(&root, b"a.txt"));
        next_batch();
        assert!(missing(&root, b"a.txt"), "forgotten without a change");
        let change = |what: &str, f: &dyn Fn(), key: &[u8]| {
            record_miss(&root, key);
            next_batch();
            assert!(missing(&root, key), "{what}: not remembered");
            f();
            assert!(missing(&root, key), "{what}: the same batch keeps its answer");
            next_batch();
            assert!(!missing(&root, key), "{what}: still remembered after the change");
        };
        change("create", &|| std::fs::write(p("a.txt"), "x").unwrap(), b"a.txt");
        change("create in a subdirectory", &|| std::fs::write(p("sub/b.txt"), "x").unwrap(), b"sub/b.txt");
        change(
            "chmod",
            &|| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(p("sub/b.txt"), std::fs::Permissions::from_mode(0o600)).unwrap()
            },
            b"sub/b.txt",
        );
        change("mkdir -p", &|| std::fs::create_dir_all(p("new/deep/er")).unwrap(), b"new/deep/er/c.txt");
        change(
            "create in a directory made after the watches",
            &|| std::fs::write(p("new/deep/er/c.txt"), "x").unwrap(),
            b"new/deep/er/c.txt",
        );
        let outside = std::env::temp_dir().join(format!("ringman-lookups-outside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&outside);
        std::fs::create_dir_all(outside.join("inner")).unwrap();
        change("a directory moved in", &|| std::fs::rename(&outside, p("moved")).unwrap(), b"moved/inner/d.txt");
        change(
            "create in a directory moved in",
            &|| std::fs::write(p("moved/inner/d.txt"), "x").unwrap(),
            b"moved/inner/d.txt",
        );
        change(
            "rename within the tree",
            &|| std::fs::rename(p("a.txt"), p("sub/renamed.txt")).unwrap(),
            b"sub/renamed.txt",
        );
        change("symlink", &|| std::os::unix::fs::symlink("sub/renamed.txt", p("link")).unwrap(), b"link");
        change("remove", &|| std::fs::remove_file(p("link")).unwrap(), b"sub/renamed.txt");
    }

    /// The entry of a `WebServer` that is gone (its inotify instance with it) goes when the
    /// thread makes its next entry, not at once (nothing runs when the server drops).
    #[test]
    fn entries_of_dropped_servers_are_let_go() {
        let s = Scratch::new("dropped");
        let entries = || LOOKUPS.with(|m| m.borrow().len());
        let first = Arc::new(s.0.clone());
        record_miss(&first, b"x");
        assert_eq!(entries(), 1);
        let second = Arc::new(s.0.clone());
        record_miss(&second, b"x");
        assert_eq!(entries(), 2, "another server of the same root has its own entry");
        drop(first);
        let third = Arc::new(s.0.clone());
        record_miss(&third, b"x");
        assert_eq!(entries(), 2, "the dropped server's entry was not let go");
        record_miss(&second, b"y");
        assert!(missing(&second, b"y"), "the live server's entry was lost");
    }

    /// Files beyond [`MAX_FILES`] start the map afresh, and their watches go with them: a
    /// thread never holds more file watches than files it remembers.
    #[test]
    fn file_watches_never_outnumber_the_files_remembered() {
        let s = Scratch::new("many");
        let root = Arc::new(s.0.clone());
        record_miss(&root, b"none"); // sets the watches up
        let watches = || {
            LOOKUPS.with(|m| {
                let m = m.borrow();
                let e = m.iter().find(|e| std::ptr::eq(e.root.as_ptr(), Arc::as_ptr(&root))).unwrap();
                (e.files.len(), e.file_watches.len())
            })
        };
        for i in 0..MAX_FILES + 100 {
            let p = s.0.join(format!("f{i}"));
            std::fs::write(&p, "x").unwrap();
            let file = File::open(&p).unwrap();
            let meta = file.metadata().unwrap();
            record_found(&root, format!("f{i}").as_bytes(), &Found { file: Rc::new(file), meta, mime: "text/plain" });
            let (files, w) = watches();
            assert!(w <= files && files <= MAX_FILES, "{w} watches for {files} files after {i}");
        }
    }

    /// A file's event forgets that file; a directory's, or lost events, everything; a watch
    /// removed changes nothing and is no longer a file's.
    #[test]
    fn events_are_sorted_by_whose_watch_reported_them() {
        let at = |wd: i32, mask: u32| {
            let mut e = event(mask, b"");
            e[..4].copy_from_slice(&wd.to_ne_bytes());
            e
        };
        let mut files: HashSet<i32> = [5, 6].into();
        let mut changed = Vec::new();
        let buf = [at(5, libc::IN_MODIFY), at(6, libc::IN_IGNORED), at(5, libc::IN_ATTRIB)].concat();
        assert!(!sort_events(&buf, &mut files, &mut changed));
        assert_eq!((changed.as_slice(), files.len()), (&[5, 5][..], 1), "{files:?}");
        changed.clear();
        assert!(sort_events(&at(1, libc::IN_CREATE), &mut files, &mut changed), "a directory's event");
        assert!(sort_events(&at(-1, libc::IN_Q_OVERFLOW), &mut files, &mut changed), "lost events");
        assert!(!sort_events(&at(1, libc::IN_IGNORED), &mut files, &mut changed));
        assert!(changed.is_empty());
    }

    #[test]
    fn directories_created_or_moved_in_and_lost_events_ask_for_a_walk() {
        let file = event(libc::IN_CREATE, b"a.txt");
        assert!(!needs_rewalk(&file));
        assert!(!needs_rewalk(&event(libc::IN_DELETE | libc::IN_ISDIR, b"old")));
        assert!(!needs_rewalk(&event(libc::IN_ATTRIB, b"")));
        let mut two = file.clone();
        two.extend(event(libc::IN_CREATE | libc::IN_ISDIR, b"new-directory-name"));
        assert!(needs_rewalk(&two), "the second event of a buffer is read too");
        assert!(needs_rewalk(&event(libc::IN_MOVED_TO | libc::IN_ISDIR, b"d")));
        assert!(needs_rewalk(&event(libc::IN_Q_OVERFLOW, b"")));
        assert!(!needs_rewalk(&file[..10]), "a cut header is no event");
    }
}
