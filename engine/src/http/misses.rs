//! A `WebServer`'s negative lookups: request paths no file answers, remembered per ring
//! thread so a request that falls through to the application does not pay a failed
//! `openat2` each time, and forgotten exactly when the tree under the root changes.
//!
//! # Exactness
//!
//! Every directory under the root carries an inotify watch for entries created, deleted or
//! moved, attribute changes (a `chmod` can make an unreadable file readable) and the
//! directory's own removal or move. Any event forgets every remembered path; one that
//! creates or moves a directory, or a lost event (`IN_Q_OVERFLOW`), first walks the tree
//! again so new directories are watched too.
//!
//! The kernel queues an inotify event inside the system call that made the change, before
//! that call returns. So a change made before a client sent its request was queued before
//! the request's bytes arrived, hence before the completion that carries them was produced,
//! hence before the batch holding that completion was reaped. The queue is read (one
//! non-blocking `read`, usually `EAGAIN`) at the first remembered path looked up after each
//! reaped batch ([`crate::reactor::reaped_batches`]): no request is answered from memory
//! that a change made before it could have altered. A miss is only remembered while the
//! watches exist: the miss that sets them up is not (the lookup ran before them).
//!
//! Not seen: changes on network filesystems made by other hosts and filesystems mounted
//! under the root later (inotify reports neither); `WebServer::negative_cache(false)`
//! turns this off for such roots.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

/// Remembered paths per root and thread; beyond this the set starts afresh (a client asking
/// for ever new paths gets failed lookups, nothing worse).
const MAX_PATHS: usize = 4096;

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

/// Size of `struct inotify_event` without its name.
const EVENT_HEADER: usize = 16;

/// One root's negative lookups on this thread.
struct Misses {
    /// The `WebServer`'s root (weak: an entry whose server is gone is dropped, closing its
    /// inotify instance, the next time an entry is made).
    root: Weak<PathBuf>,
    /// The root's path, for messages.
    path: PathBuf,
    /// The inotify instance watching the tree (`None`: it could not be set up; nothing is
    /// remembered).
    inotify: Option<File>,
    paths: HashSet<Box<[u8]>>,
    /// The reaped batch after which the queue was last read.
    read_at: u64,
}

thread_local! {
    static MISSES: RefCell<Vec<Misses>> = const { RefCell::new(Vec::new()) };
}

/// Whether `rel` under `root` is known to name no file, as of every change made before the
/// completions this thread is handling.
pub(super) fn known(root: &Arc<PathBuf>, rel: &[u8]) -> bool {
    MISSES.with(|m| {
        let mut m = m.borrow_mut();
        let Some(e) = m.iter_mut().find(|e| std::ptr::eq(e.root.as_ptr(), Arc::as_ptr(root))) else { return false };
        if e.paths.is_empty() {
            return false;
        }
        let now = crate::reactor::reaped_batches();
        if e.read_at != now {
            e.read_at = now;
            e.refresh();
        }
        e.paths.contains(rel)
    })
}

/// Remembers that `rel` under `root` named no file (a lookup that failed for a reason only
/// a change of the tree can undo).
pub(super) fn record(root: &Arc<PathBuf>, rel: &[u8]) {
    MISSES.with(|m| {
        let mut m = m.borrow_mut();
        let e = match m.iter_mut().position(|e| std::ptr::eq(e.root.as_ptr(), Arc::as_ptr(root))) {
            Some(i) => &mut m[i],
            None => {
                // The watches did not exist when this lookup ran: it is not remembered.
                m.retain(|e| e.root.strong_count() > 0);
                m.push(Misses::watch(root));
                return;
            }
        };
        if e.inotify.is_none() {
            return;
        }
        if e.paths.len() >= MAX_PATHS {
            e.paths.clear();
        }
        e.paths.insert(rel.into());
    })
}

impl Misses {
    fn watch(root: &Arc<PathBuf>) -> Misses {
        let mut m = Misses {
            root: Arc::downgrade(root),
            path: root.to_path_buf(),
            inotify: None,
            paths: HashSet::new(),
            read_at: crate::reactor::reaped_batches(),
        };
        match crate::sys::inotify() {
            Ok(fd) => {
                let f = File::from(fd);
                match watch_tree(&f, &m.path) {
                    Ok(()) => m.inotify = Some(f),
                    Err(e) => log::warn!(
                        "WebServer {}: cannot watch the tree ({e}); failed lookups are not remembered",
                        m.path.display()
                    ),
                }
            }
            Err(e) => log::warn!("WebServer {}: no inotify ({e}); failed lookups are not remembered", m.path.display()),
        }
        m
    }

    /// Reads the queued events: any forgets every path; a new or moved directory, or lost
    /// events, first has the tree watched again.
    fn refresh(&mut self) {
        let Some(f) = self.inotify.as_mut() else { return };
        let mut buf = [0u8; 4096];
        let (mut any, mut rewalk) = (false, false);
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    any = true;
                    rewalk |= needs_rewalk(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!(
                        "WebServer {}: inotify read failed ({e}); failed lookups are no longer remembered",
                        self.path.display()
                    );
                    self.inotify = None;
                    self.paths.clear();
                    return;
                }
            }
        }
        if rewalk {
            if let Err(e) = watch_tree(f, &self.path) {
                log::warn!(
                    "WebServer {}: cannot watch the tree ({e}); failed lookups are no longer remembered",
                    self.path.display()
                );
                self.inotify = None;
            }
        }
        if any {
            self.paths.clear();
        }
    }
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
            let p = std::env::temp_dir().join(format!("ringman-misses-{tag}-{}", std::process::id()));
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

    /// Every kind of change forgets what was remembered, seen at the first lookup after the
    /// next reaped batch; nothing is forgotten without a change; directories made after the
    /// watches were set up (created, moved in, several levels at once) are watched too.
    #[test]
    fn remembered_misses_last_until_the_tree_changes() {
        let s = Scratch::new("changes");
        let root = Arc::new(s.0.clone());
        let p = |rel: &str| s.0.join(rel);
        // The first miss sets the watches up and is not remembered (its lookup ran before).
        record(&root, b"a.txt");
        assert!(!known(&root, b"a.txt"));
        record(&root, b"a.txt");
        assert!(known(&root, b"a.txt"));
        next_batch();
        assert!(known(&root, b"a.txt"), "forgotten without a change");
        let change = |what: &str, f: &dyn Fn(), key: &[u8]| {
            record(&root, key);
            next_batch();
            assert!(known(&root, key), "{what}: not remembered");
            f();
            assert!(known(&root, key), "{what}: the same batch keeps its answer");
            next_batch();
            assert!(!known(&root, key), "{what}: still remembered after the change");
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
        let outside = std::env::temp_dir().join(format!("ringman-misses-outside-{}", std::process::id()));
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
        let entries = || MISSES.with(|m| m.borrow().len());
        let first = Arc::new(s.0.clone());
        record(&first, b"x");
        assert_eq!(entries(), 1);
        let second = Arc::new(s.0.clone());
        record(&second, b"x");
        assert_eq!(entries(), 2, "another server of the same root has its own entry");
        drop(first);
        let third = Arc::new(s.0.clone());
        record(&third, b"x");
        assert_eq!(entries(), 2, "the dropped server's entry was not let go");
        record(&second, b"y");
        assert!(known(&second, b"y"), "the live server's entry was lost");
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
