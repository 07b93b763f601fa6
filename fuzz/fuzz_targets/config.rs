//! Any UTF-8 text as a config file: loading never panics, a loaded config
//! can be summarised, and every error can be displayed with its location.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ringlb::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(src, Path::new("fuzz.toml")) {
        Ok(config) => {
            assert!(!config.summary().is_empty());
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("fuzz.toml"), "{shown:?}");
            let _ = (e.file(), e.key(), e.kind().to_string());
            if let Some(at) = e.location() {
                let lines = src.bytes().filter(|&b| b == b'\n').count() + 1;
                assert!((1..=lines).contains(&at.line), "{shown:?}");
                assert!(at.column >= 1, "{shown:?}");
            }
        }
    }
});
