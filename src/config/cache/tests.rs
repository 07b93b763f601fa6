use std::path::Path;
use std::time::Duration;

use super::parse_size;
use crate::config::Config;

fn parse(src: &str) -> Result<Config, crate::config::ConfigError> {
    Config::from_toml_str(src, Path::new("config.toml"))
}

/// A valid config whose route has `route_cache` and whose file ends with
/// `tail`.
fn with(route_cache: &str, tail: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n\
         [[routes]]\nupstream = \"app\"\n{route_cache}\n\
         [upstreams.app]\nbackends = [{{ addr = \"127.0.0.1:9001\" }}]\n{tail}\n"
    )
}

fn rejected(src: &str, prefix: &str, detail: &str) {
    let shown = parse(src)
        .expect_err("config should be rejected")
        .to_string();
    assert!(
        shown.starts_with(prefix),
        "{shown:?} should start with {prefix:?}"
    );
    assert!(
        shown.contains(detail),
        "{shown:?} should contain {detail:?}"
    );
}

#[test]
fn sizes() {
    assert_eq!(parse_size("256MiB"), Some(256 << 20));
    assert_eq!(parse_size("8 MiB"), Some(8 << 20));
    assert_eq!(parse_size("512KiB"), Some(512 << 10));
    assert_eq!(parse_size("1GiB"), Some(1 << 30));
    assert_eq!(parse_size("100"), Some(100));
    assert_eq!(parse_size("100B"), Some(100));
    for bad in [
        "",
        "MiB",
        "8MB",
        "8mib",
        "-1MiB",
        "1.5GiB",
        "99999999999999999999GiB",
    ] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
}

#[test]
fn a_route_cache_and_its_zone() {
    let src = with(
        "cache = { zone = \"main\", ttl = \"30s\", key = { headers = [\"X-Tenant\"], cookies = [\"lang\"] }, \
         stale_if_error = \"5m\", stale_while_revalidate = \"10s\", lock_timeout = \"2s\", \
         status_header = false, cache_set_cookie = true, warm = [\"/a\", \"/b?x=1\"] }",
        "[cache.zones.main]\nmax_size = \"64MiB\"\nmax_object = 1048576\n[cache.zones.other]\n",
    );
    let config = parse(&src).unwrap();
    assert_eq!(config.cache_zones.len(), 2);
    let main = &config.cache_zones[0];
    assert_eq!(
        (main.name.as_str(), main.max_size, main.max_object),
        ("main", 64 << 20, 1 << 20)
    );
    let other = &config.cache_zones[1];
    assert_eq!((other.max_size, other.max_object), (256 << 20, 8 << 20));
    let c = config.routes[0].cache.as_deref().unwrap();
    assert_eq!(c.zone, 0);
    assert_eq!(c.key.headers, ["x-tenant"]);
    assert_eq!(c.key.cookies, ["lang"]);
    assert_eq!(c.rules.default_ttl, Duration::from_secs(30));
    assert_eq!(c.rules.stale_if_error, Duration::from_secs(300));
    assert_eq!(c.rules.stale_while_revalidate, Duration::from_secs(10));
    assert!(c.rules.store_set_cookie);
    assert_eq!(c.lock_timeout, Duration::from_secs(2));
    assert!(!c.status_header);
    assert_eq!(c.warm, ["/a", "/b?x=1"]);
}

#[test]
fn defaults() {
    let src = with("cache = { zone = \"z\" }", "[cache.zones.z]\n");
    let config = parse(&src).unwrap();
    let c = config.routes[0].cache.as_deref().unwrap();
    assert_eq!(c.rules.default_ttl, Duration::from_secs(60));
    assert_eq!(c.rules.stale_if_error, Duration::ZERO);
    assert!(!c.rules.store_set_cookie);
    assert!(c.status_header);
    assert_eq!(c.lock_timeout, Duration::from_secs(5));
}

#[test]
fn bad_cache_keys_name_the_place() {
    rejected(
        &with("cache = { zone = \"nope\" }", "[cache.zones.z]\n"),
        "config.toml:5:18: routes[0].cache.zone: ",
        "no zone \"nope\" in [cache.zones] (declared: z)",
    );
    rejected(
        &with("cache = { zone = \"z\" }", ""),
        "config.toml:5:18: routes[0].cache.zone: ",
        "declared: none",
    );
    rejected(
        &with("", "[cache.zones.z]\nmax_size = \"10MB\""),
        "config.toml:9:12: cache.zones.z.max_size: ",
        "\"8MiB\"",
    );
    rejected(
        &with("", "[cache.zones.z]\nmax_size = \"100KiB\""),
        "config.toml:9:12: cache.zones.z.max_size: ",
        "must be 1MiB to 64GiB",
    );
    rejected(
        &with(
            "",
            "[cache.zones.z]\nmax_size = \"1MiB\"\nmax_object = \"2MiB\"",
        ),
        "config.toml:10:14: cache.zones.z.max_object: ",
        "must be 1B to 1MiB",
    );
    rejected(
        &with(
            "cache = { zone = \"z\", warm = [\"a b\"] }",
            "[cache.zones.z]\n",
        ),
        "config.toml:5:31: routes[0].cache.warm[0]: ",
        "not a request target",
    );
    rejected(
        &with(
            "cache = { zone = \"z\", key = { headers = [\"a b\"] } }",
            "[cache.zones.z]\n",
        ),
        "config.toml:5:42: routes[0].cache.key.headers[0]: ",
        "not a header name",
    );
    rejected(
        &with(
            "cache = { zone = \"z\", ttl = \"soon\" }",
            "[cache.zones.z]\n",
        ),
        "config.toml:5:",
        "invalid duration",
    );
    rejected(
        &with("cache = { zone = \"z\", size = 1 }", "[cache.zones.z]\n"),
        "config.toml:5:",
        "unknown field `size`",
    );
    rejected(
        &with("", "[cache.zones.\"a/b\"]\n"),
        "config.toml:8:",
        "zone name \"a/b\"",
    );
}
