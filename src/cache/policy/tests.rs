use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

const RULES: Rules = Rules {
    default_ttl: Duration::from_secs(60),
    store_set_cookie: false,
    stale_while_revalidate: Duration::from_secs(10),
    stale_if_error: Duration::from_secs(300),
};

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn req(method: &str, headers: &[(&str, &str)]) -> RequestFacts {
    RequestFacts::read(method, headers.iter().map(|(n, v)| (*n, v.as_bytes())))
}

fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseFacts {
    ResponseFacts::read(status, headers.iter().map(|(n, v)| (*n, v.as_bytes())))
}

fn store(r: &RequestFacts, p: &ResponseFacts) -> Result<Lifetime, NotStored> {
    decide_store(r, p, &RULES, at(1_000_000))
}

#[test]
fn what_is_not_stored_and_why() {
    let get = req("GET", &[]);
    let cases: &[(&str, RequestFacts, ResponseFacts, NotStored)] = &[
        ("post", req("POST", &[]), resp(200, &[]), NotStored::Method),
        ("206", get.clone(), resp(206, &[]), NotStored::Status),
        ("500", get.clone(), resp(500, &[]), NotStored::Status),
        ("302", get.clone(), resp(302, &[]), NotStored::Status),
        (
            "resp no-store",
            get.clone(),
            resp(200, &[("Cache-Control", "no-store")]),
            NotStored::NoStore,
        ),
        (
            "req no-store",
            req("GET", &[("cache-control", "no-store")]),
            resp(200, &[]),
            NotStored::NoStore,
        ),
        (
            "private",
            get.clone(),
            resp(200, &[("Cache-Control", "private, max-age=60")]),
            NotStored::Private,
        ),
        (
            "set-cookie",
            get.clone(),
            resp(200, &[("Set-Cookie", "a=b")]),
            NotStored::SetCookie,
        ),
        (
            "authorization",
            req("GET", &[("Authorization", "Basic eDp5")]),
            resp(200, &[("Cache-Control", "max-age=60")]),
            NotStored::Authorization,
        ),
        (
            "vary *",
            get.clone(),
            resp(200, &[("Vary", "Accept, *")]),
            NotStored::VaryAll,
        ),
        (
            "no lifetime, no validator",
            get.clone(),
            resp(200, &[("Cache-Control", "max-age=0")]),
            NotStored::Useless,
        ),
    ];
    for (name, r, p, want) in cases {
        assert_eq!(store(r, p), Err(*want), "{name}");
    }
}

#[test]
fn what_is_stored() {
    let get = req("GET", &[]);
    for status in STORABLE_STATUSES {
        assert!(store(&get, &resp(status, &[])).is_ok(), "{status}");
    }
    assert!(store(&req("HEAD", &[]), &resp(200, &[])).is_ok());
    // Authorization with a response that allows a shared cache (§3.5).
    let auth = req("GET", &[("Authorization", "Bearer x")]);
    for cc in ["public", "s-maxage=5", "must-revalidate, max-age=5"] {
        assert!(
            store(&auth, &resp(200, &[("Cache-Control", cc)])).is_ok(),
            "{cc}"
        );
    }
    // Set-Cookie when the route allows it.
    let rules = Rules {
        store_set_cookie: true,
        ..RULES
    };
    assert!(decide_store(&get, &resp(200, &[("Set-Cookie", "a=b")]), &rules, at(0)).is_ok());
    // Zero lifetime but a validator: stored, revalidated on each use.
    assert!(store(
        &get,
        &resp(200, &[("Cache-Control", "no-cache"), ("ETag", "\"a\"")])
    )
    .is_ok());
}

#[test]
fn freshness_takes_s_maxage_then_max_age_then_expires_then_the_ttl() {
    let ttl = Duration::from_secs(60);
    let date = "Sun, 06 Nov 1994 08:49:37 GMT";
    let expires = "Sun, 06 Nov 1994 08:50:37 GMT"; // 60 s after
    let f = |h: &[(&str, &str)]| freshness_lifetime(&resp(200, h), ttl).as_secs();
    assert_eq!(
        f(&[
            ("Cache-Control", "s-maxage=5, max-age=7"),
            ("Date", date),
            ("Expires", expires)
        ]),
        5
    );
    assert_eq!(
        f(&[
            ("Cache-Control", "max-age=7"),
            ("Date", date),
            ("Expires", expires)
        ]),
        7
    );
    assert_eq!(
        f(&[("Date", date), ("Expires", "Sun, 06 Nov 1994 08:49:47 GMT")]),
        10
    );
    assert_eq!(
        f(&[("Date", date), ("Expires", "0")]),
        0,
        "an invalid Expires is expired"
    );
    assert_eq!(
        f(&[("Date", expires), ("Expires", date)]),
        0,
        "Expires before Date"
    );
    assert_eq!(f(&[]), 60);
    assert_eq!(f(&[("Cache-Control", "no-cache, max-age=100")]), 0);
}

#[test]
fn the_initial_age_is_the_larger_of_age_and_the_apparent_age() {
    let date = httpdate::fmt_http_date(at(1_000_000 - 30));
    let l = store(
        &req("GET", &[]),
        &resp(200, &[("Date", &date), ("Age", "5")]),
    )
    .unwrap();
    assert_eq!(l.initial_age, Duration::from_secs(30));
    let l = store(
        &req("GET", &[]),
        &resp(200, &[("Date", &date), ("Age", "100")]),
    )
    .unwrap();
    assert_eq!(l.initial_age, Duration::from_secs(100));
}

#[test]
fn stale_bounds_come_from_the_route_and_the_response() {
    let get = req("GET", &[]);
    let l = store(
        &get,
        &resp(
            200,
            &[("Cache-Control", "max-age=10, stale-while-revalidate=3")],
        ),
    )
    .unwrap();
    assert_eq!(l.stale_while_revalidate, Duration::from_secs(3));
    assert_eq!(l.stale_if_error, Duration::from_secs(300));
    let l = store(
        &get,
        &resp(
            200,
            &[("Cache-Control", "max-age=10, stale-if-error=99999")],
        ),
    )
    .unwrap();
    assert_eq!(
        l.stale_if_error,
        Duration::from_secs(300),
        "the route's bound wins"
    );
    for strict in [
        "must-revalidate",
        "proxy-revalidate",
        "s-maxage=10",
        "no-cache",
    ] {
        let h = [("Cache-Control", strict), ("ETag", "\"x\"")];
        let l = store(&get, &resp(200, &h)).unwrap();
        assert_eq!(l.stale_while_revalidate, Duration::ZERO, "{strict}");
        assert_eq!(l.stale_if_error, Duration::ZERO, "{strict}");
    }
}

#[test]
fn usable_follows_age_and_the_request() {
    let life = Lifetime {
        fresh: Duration::from_secs(10),
        initial_age: Duration::ZERO,
        stale_while_revalidate: Duration::from_secs(5),
        stale_if_error: Duration::from_secs(60),
    };
    let s = Duration::from_secs;
    let get = req("GET", &[]);
    assert_eq!(usable(&life, s(9), &get), Use::Fresh);
    assert_eq!(usable(&life, s(12), &get), Use::StaleWhileRevalidate);
    assert_eq!(
        usable(&life, s(20), &get),
        Use::Revalidate { on_error: true }
    );
    assert_eq!(
        usable(&life, s(100), &get),
        Use::Revalidate { on_error: false }
    );
    let no_cache = req("GET", &[("Cache-Control", "no-cache")]);
    assert_eq!(
        usable(&life, s(1), &no_cache),
        Use::Revalidate { on_error: true }
    );
    let max_age = req("GET", &[("Cache-Control", "max-age=3")]);
    assert_eq!(usable(&life, s(2), &max_age), Use::Fresh);
    assert_eq!(
        usable(&life, s(4), &max_age),
        Use::Revalidate { on_error: true }
    );
    let min_fresh = req("GET", &[("Cache-Control", "min-fresh=5")]);
    assert_eq!(usable(&life, s(4), &min_fresh), Use::Fresh);
    assert_eq!(
        usable(&life, s(6), &min_fresh),
        Use::Revalidate { on_error: true }
    );
    let strict = Lifetime {
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        ..life
    };
    assert_eq!(
        usable(&strict, s(11), &get),
        Use::Revalidate { on_error: false }
    );
}

#[test]
fn conditional_requests() {
    let lm = at(1_000);
    let inm = |v: &str| req("GET", &[("If-None-Match", v)]);
    assert!(not_modified(&inm("\"a\""), Some("\"a\""), None));
    assert!(
        not_modified(&inm("W/\"a\""), Some("\"a\""), None),
        "weak comparison"
    );
    assert!(not_modified(&inm("\"b\", \"a\""), Some("W/\"a\""), None));
    assert!(not_modified(&inm("*"), None, None));
    assert!(!not_modified(&inm("\"b\""), Some("\"a\""), None));
    assert!(!not_modified(&inm("\"a\""), None, Some(lm)));
    let ims = |t: SystemTime| req("GET", &[("If-Modified-Since", &httpdate::fmt_http_date(t))]);
    assert!(not_modified(&ims(at(1_000)), None, Some(lm)));
    assert!(not_modified(&ims(at(2_000)), None, Some(lm)));
    assert!(!not_modified(&ims(at(500)), None, Some(lm)));
    assert!(!not_modified(&ims(at(2_000)), None, None));
    // If-None-Match wins over If-Modified-Since.
    let both = req(
        "GET",
        &[
            ("If-None-Match", "\"b\""),
            ("If-Modified-Since", &httpdate::fmt_http_date(at(2_000))),
        ],
    );
    assert!(!not_modified(&both, Some("\"a\""), Some(lm)));
}

#[test]
fn vary_names_are_normalised() {
    let p = resp(
        200,
        &[
            ("Vary", "Accept-Encoding, accept-language"),
            ("Vary", "Accept-Encoding"),
        ],
    );
    assert_eq!(p.vary.as_deref(), Some("accept-encoding,accept-language"));
    assert_eq!(resp(200, &[("Vary", "*")]).vary.as_deref(), Some("*"));
    assert_eq!(resp(200, &[]).vary, None);
}
