//! Exact line formats, the writer thread, drops, reopen and request ids.

use std::collections::HashSet;

use super::*;

fn entry() -> Entry<'static> {
    Entry {
        // 2000-10-10 13:55:36.789 UTC
        time: UNIX_EPOCH + Duration::from_millis(971_186_136_789),
        client: "192.0.2.7:51234".parse().unwrap(),
        method: b"GET",
        target: b"/a?b=\"c\"",
        version: "HTTP/1.1",
        status: 200,
        bytes: 2326,
        duration: Duration::from_micros(12_345),
        backend: Some("10.0.0.1:80".parse().unwrap()),
        attempts: 1,
        request_id: "0123abcd0001000000000005",
        referer: None,
        user_agent: Some(b"curl/8.0 \\ \x01"),
        cache: None,
    }
}

fn combined(e: &Entry<'_>) -> String {
    let mut out = Vec::new();
    format_combined(e, &mut out);
    String::from_utf8(out).unwrap()
}

fn json(e: &Entry<'_>) -> String {
    let mut out = Vec::new();
    format_json(e, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn combined_exactly() {
    assert_eq!(
        combined(&entry()),
        "192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" 200 2326 \
         \"-\" \"curl/8.0 \\x5C \\x01\" rt=0.012 upstream=10.0.0.1:80 attempts=1 \
         rid=0123abcd0001000000000005\n"
    );
    let local = Entry {
        backend: None,
        attempts: 0,
        status: 404,
        client: "[2001:db8::1]:1".parse().unwrap(),
        method: b"G\nET",
        referer: Some(b"http://x/"),
        ..entry()
    };
    assert_eq!(
        combined(&local),
        "2001:db8::1 - - [10/Oct/2000:13:55:36 +0000] \"G\\x0AET /a?b=\\x22c\\x22 HTTP/1.1\" 404 2326 \
         \"http://x/\" \"curl/8.0 \\x5C \\x01\" rt=0.012 upstream=- attempts=0 \
         rid=0123abcd0001000000000005\n"
    );
}

#[test]
fn json_exactly_and_valid() {
    let line = json(&entry());
    assert_eq!(
        line,
        "{\"time\":\"2000-10-10T13:55:36.789Z\",\"client\":\"192.0.2.7:51234\",\"method\":\"GET\",\
         \"target\":\"/a?b=\\\"c\\\"\",\"version\":\"HTTP/1.1\",\"status\":200,\"bytes\":2326,\
         \"duration_ms\":12.345,\"backend\":\"10.0.0.1:80\",\"attempts\":1,\
         \"request_id\":\"0123abcd0001000000000005\",\"referer\":null,\
         \"user_agent\":\"curl/8.0 \\\\ \\u0001\"}\n"
    );
    let bad = Entry {
        target: b"/\xff\n",
        backend: None,
        ..entry()
    };
    let v: serde_json::Value = serde_json::from_str(json(&bad).trim_end()).unwrap();
    assert_eq!(v["target"], "/\u{fffd}\n");
    assert_eq!(v["backend"], serde_json::Value::Null);
    assert!(!json(&bad).trim_end().contains('\n'));
}

#[test]
fn civil_dates() {
    let at = |secs: u64| civil(UNIX_EPOCH + Duration::from_secs(secs));
    assert_eq!(at(0), (1970, 1, 1, 0, 0, 0, 0));
    assert_eq!(at(951_782_400), (2000, 2, 29, 0, 0, 0, 0));
    assert_eq!(at(1_709_251_199), (2024, 2, 29, 23, 59, 59, 0));
    assert_eq!(at(4_102_444_800), (2100, 1, 1, 0, 0, 0, 0));
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringlb-access-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(path: &Path, format: AccessLogFormat) -> AccessLogConfig {
    AccessLogConfig {
        path: path.to_owned(),
        format,
    }
}

#[test]
fn writer_thread_writes_every_line_from_every_worker() {
    let dir = temp_dir("all");
    let path = dir.join("access.log");
    let log = AccessLog::start(&config(&path, AccessLogFormat::Json)).unwrap();
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let mut worker = log.worker();
            std::thread::spawn(move || {
                for i in 0..3000 {
                    let rid = format!("{w}-{i}");
                    worker.log(&Entry {
                        request_id: &rid,
                        ..entry()
                    });
                    // Stay under the channel bound: this test is about
                    // completeness, the drop test about back-pressure.
                    if i % 500 == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                // Dropping the worker flushes the rest.
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    log.sync();
    let text = std::fs::read_to_string(&path).unwrap();
    let ids: HashSet<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["request_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(log.dropped_lines(), 0);
    assert_eq!(text.lines().count(), 6000);
    assert_eq!(ids.len(), 6000);
    drop(log);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn small_buffers_wait_for_the_interval() {
    let dir = temp_dir("interval");
    let path = dir.join("access.log");
    let log = AccessLog::start(&config(&path, AccessLogFormat::Combined)).unwrap();
    let mut worker = log.worker();
    let t0 = Instant::now();
    worker.log(&entry());
    worker.flush_if_due(t0);
    log.sync();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    worker.flush_if_due(Instant::now() + FLUSH_INTERVAL);
    log.sync();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), combined(&entry()));
    drop(worker);
    drop(log);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_channel_drops_and_counts_without_blocking() {
    // A channel nobody reads: the writer is "stuck".
    let (tx, _rx) = mpsc::sync_channel(1);
    let dropped = Arc::new(AtomicU64::new(0));
    let mut worker = WorkerLog {
        tx,
        format: AccessLogFormat::Combined,
        buf: Vec::new(),
        lines: 0,
        oldest: None,
        dropped: dropped.clone(),
    };
    let t0 = Instant::now();
    for _ in 0..3 {
        for _ in 0..5 {
            worker.log(&entry());
        }
        worker.flush();
    }
    // The first buffer fits; the other two are dropped.
    assert_eq!(dropped.load(Ordering::Relaxed), 10);
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[test]
fn reopen_follows_a_rename() {
    let dir = temp_dir("reopen");
    let path = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let log = AccessLog::start(&config(&path, AccessLogFormat::Combined)).unwrap();
    let mut worker = log.worker();
    worker.log(&Entry {
        status: 201,
        ..entry()
    });
    worker.flush();
    log.sync();
    std::fs::rename(&path, &rotated).unwrap();
    log.reopen();
    worker.log(&Entry {
        status: 202,
        ..entry()
    });
    worker.flush();
    log.sync();
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&path).unwrap();
    assert!(old.contains("\" 201 ") && !old.contains("\" 202 "), "{old}");
    assert!(new.contains("\" 202 ") && !new.contains("\" 201 "), "{new}");
    assert_eq!(log.write_errors(), 0);
    drop(worker);
    drop(log);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn start_fails_on_a_missing_directory() {
    let cfg = config(
        Path::new("/nonexistent/ringlb/access.log"),
        AccessLogFormat::Json,
    );
    assert!(AccessLog::start(&cfg).is_err());
}

#[test]
fn request_ids_are_unique_and_hex() {
    let mut seen = HashSet::new();
    for _ in 0..10_000 {
        let id = request_id();
        assert_eq!(id.as_str().len(), REQUEST_ID_LEN);
        assert!(id.as_bytes().iter().all(|b| b.is_ascii_hexdigit()));
        assert!(seen.insert(id));
    }
    let other: Vec<RequestId> = std::thread::spawn(|| (0..1000).map(|_| request_id()).collect())
        .join()
        .unwrap();
    for id in other {
        assert!(seen.insert(id), "{id} repeated across threads");
    }
    // Same process prefix everywhere.
    let a = request_id();
    let b = std::thread::spawn(request_id).join().unwrap();
    assert_eq!(a.as_str()[..8], b.as_str()[..8]);
    assert_ne!(a.as_str()[8..12], b.as_str()[8..12]);
}

#[test]
fn the_cache_status_is_added_on_caching_routes_only() {
    let cached = Entry {
        cache: Some("HIT"),
        ..entry()
    };
    assert!(combined(&cached).ends_with(" rid=0123abcd0001000000000005 cache=HIT\n"));
    let v: serde_json::Value = serde_json::from_str(json(&cached).trim_end()).unwrap();
    assert_eq!(v["cache"], "HIT");
    assert!(!combined(&entry()).contains("cache="));
    assert!(!json(&entry()).contains("\"cache\""));
}

fn tcp_entry() -> TcpEntry<'static> {
    TcpEntry {
        time: UNIX_EPOCH + Duration::from_millis(971_186_136_789),
        client: "192.0.2.7:51234".parse().unwrap(),
        listener: "pg \"main\"",
        upstream: Some("db"),
        backend: Some("10.0.0.1:5432".parse().unwrap()),
        status: "ok",
        bytes_sent: 1234,
        bytes_received: 567,
        duration: Duration::from_millis(1204),
        attempts: 2,
        sni: Some("db.example.com"),
    }
}

#[test]
fn tcp_sessions_in_both_formats() {
    let mut out = Vec::new();
    format_tcp_combined(&tcp_entry(), &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] \"TCP pg \\x22main\\x22\" ok 1234 567 \
         rt=1.204 upstream=10.0.0.1:5432 attempts=2 sni=db.example.com\n"
    );
    let refused = TcpEntry {
        upstream: None,
        backend: None,
        status: "no_sni_route",
        sni: None,
        attempts: 0,
        ..tcp_entry()
    };
    let mut out = Vec::new();
    format_tcp_combined(&refused, &mut out);
    let line = String::from_utf8(out).unwrap();
    assert!(
        line.ends_with("\" no_sni_route 1234 567 rt=1.204 upstream=- attempts=0 sni=-\n"),
        "{line}"
    );

    let mut out = Vec::new();
    format_tcp_json(&tcp_entry(), &mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["protocol"], "tcp");
    assert_eq!(v["listener"], "pg \"main\"");
    assert_eq!(v["upstream"], "db");
    assert_eq!(v["backend"], "10.0.0.1:5432");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["bytes_sent"], 1234);
    assert_eq!(v["bytes_received"], 567);
    assert_eq!(v["duration_ms"], 1204.0);
    assert_eq!(v["attempts"], 2);
    assert_eq!(v["sni"], "db.example.com");
    let mut out = Vec::new();
    format_tcp_json(&refused, &mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(v["upstream"].is_null() && v["backend"].is_null() && v["sni"].is_null());
}
