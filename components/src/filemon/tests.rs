use std::sync::mpsc::{channel, Receiver};

use super::*;

/// Generous bound so a broken monitor fails instead of hanging; never a performance check.
const PATIENCE: Duration = Duration::from_secs(20);

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rm-filemon-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn monitor(watch: Watch) -> (FileMonitor, Receiver<Vec<PathBuf>>) {
    let (tx, rx) = channel();
    let m = FileMonitor::start(watch, move |changed| {
        let _ = tx.send(changed.to_vec());
        Flow::Continue
    })
    .unwrap();
    (m, rx)
}

fn next(rx: &Receiver<Vec<PathBuf>>) -> Vec<PathBuf> {
    rx.recv_timeout(PATIENCE).expect("no change reported")
}

#[test]
fn filemon_watch_defaults() {
    let w = Watch::default();
    assert!(w.binary && w.paths.is_empty() && w.extensions.is_empty() && w.ignore.is_empty());
    assert_eq!(w.debounce, Duration::from_millis(300));
}

#[test]
fn filemon_decodes_events() {
    let mut buf = Vec::new();
    for (wd, mask, name) in [(3i32, libc::IN_CREATE, &b"a.rs"[..]), (-1, libc::IN_Q_OVERFLOW, b""), (7, 2, b"x")] {
        // Names are NUL-padded to a multiple of 16 bytes.
        let len = if name.is_empty() { 0 } else { (name.len() / 16 + 1) * 16 };
        buf.extend(wd.to_ne_bytes());
        buf.extend(mask.to_ne_bytes());
        buf.extend(0u32.to_ne_bytes());
        buf.extend((len as u32).to_ne_bytes());
        let mut n = name.to_vec();
        n.resize(len, 0);
        buf.extend(n);
    }
    let evs = inotify::decode(&buf);
    assert_eq!(evs.len(), 3);
    assert_eq!((evs[0].wd, evs[0].mask, evs[0].name.as_os_str()), (3, libc::IN_CREATE, OsStr::new("a.rs")));
    assert_eq!((evs[1].wd, evs[1].name.as_os_str()), (-1, OsStr::new("")));
    assert_eq!((evs[2].wd, evs[2].mask, evs[2].name.as_os_str()), (7, 2, OsStr::new("x")));
    // A truncated event is not invented.
    assert_eq!(inotify::decode(&buf[..buf.len() - 1]).len(), 2);
}

#[test]
fn filemon_burst_is_one_change_and_filters_apply() {
    let dir = temp_dir("burst");
    let outside = temp_dir("burst-outside");
    let watch = Watch::new()
        .binary(false)
        .path(&dir)
        .extension("rs")
        .debounce(Duration::from_millis(500))
        .ignore(dir.join("app.pid"));
    let (_m, rx) = monitor(watch);
    // A burst: ten writes, each well within the quiet period of the previous one.
    for i in 0..10 {
        std::fs::write(dir.join(format!("f{i}.rs")), format!("{i}")).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let batch = next(&rx);
    assert_eq!(batch.len(), 10, "one report for the whole burst: {batch:?}");
    // Not counted: another extension, an ignored file (and what extends its name), a file
    // outside the watched set. Then one that counts: the next report must hold it alone,
    // which it would not if the burst had been split or the others had counted.
    std::fs::write(dir.join("notes.txt"), "x").unwrap();
    std::fs::write(dir.join("app.pid"), "1").unwrap();
    std::fs::write(dir.join("app.pid.sock"), "1").unwrap();
    std::fs::write(outside.join("o.rs"), "x").unwrap();
    std::fs::write(dir.join("marker.rs"), "x").unwrap();
    assert_eq!(next(&rx), vec![dir.join("marker.rs")]);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&outside);
}

#[test]
fn filemon_watches_new_subdirectories_and_named_files() {
    let dir = temp_dir("tree");
    let other = temp_dir("tree-file");
    let conf = other.join("app.toml");
    std::fs::write(&conf, "a").unwrap();
    std::fs::write(other.join("neighbour.toml"), "a").unwrap();
    let watch = Watch::new().binary(false).path(&dir).path(&conf).extension("rs").debounce(Duration::from_millis(50));
    let (_m, rx) = monitor(watch);
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    std::fs::write(dir.join("a/b/new.rs"), "x").unwrap();
    // Either the file's own event, or (written before its directory's watch existed) the
    // scan of the new directory reports it.
    let batch = next(&rx);
    assert!(batch.iter().any(|p| dir.join("a/b/new.rs").starts_with(p) && p.starts_with(&dir)), "{batch:?}");
    // By now the new directory is watched: its next change is reported by its own name.
    std::fs::write(dir.join("a/b/again.rs"), "x").unwrap();
    assert_eq!(next(&rx), vec![dir.join("a/b/again.rs")]);
    // A named file: an editor's atomic save (write elsewhere, rename over) counts; its
    // neighbour does not.
    std::fs::write(other.join("neighbour.toml"), "b").unwrap();
    std::fs::write(other.join(".app.toml.swp"), "b").unwrap();
    std::fs::rename(other.join(".app.toml.swp"), &conf).unwrap();
    assert_eq!(next(&rx), vec![conf.clone()]);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

#[test]
fn filemon_stop_ends_the_thread_and_missing_paths_fail() {
    let dir = temp_dir("stop");
    let (tx, rx) = channel();
    let m = FileMonitor::start(Watch::new().binary(false).path(&dir).debounce(Duration::from_millis(10)), move |c| {
        let _ = tx.send(c.to_vec());
        Flow::Stop
    })
    .unwrap();
    std::fs::write(dir.join("a"), "x").unwrap();
    assert_eq!(next(&rx), vec![dir.join("a")]);
    // Flow::Stop ended the thread: the sender is gone with it.
    std::fs::write(dir.join("b"), "x").unwrap();
    assert!(rx.recv_timeout(PATIENCE).is_err(), "no report after Flow::Stop");
    m.stop();
    // Dropping a monitor that waits for events returns (the stop pipe wakes the thread).
    let (m, _rx) = monitor(Watch::new().path(&dir));
    m.stop();
    let err = FileMonitor::start(Watch::new().path(dir.join("missing")), |_| Flow::Continue).unwrap_err();
    assert!(matches!(err, FileMonitorError::Watch { .. }), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
