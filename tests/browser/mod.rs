//! What the tests that look at a timeline page in headless Chromium share: where the page
//! goes, which browser runs it, and how to run it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `file` under the target directory (`CARGO_TARGET_DIR` or `target`).
pub fn target(file: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from);
    dir.join(file)
}

/// Chromium's command: `RAINKV_CHROMIUM`, else `chromium` or `chromium-browser` on the PATH.
pub fn chromium() -> Option<String> {
    let candidates = match std::env::var("RAINKV_CHROMIUM") {
        Ok(path) => vec![path],
        Err(_) => vec!["chromium".to_string(), "chromium-browser".to_string()],
    };
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Loads `page` in headless Chromium with `mode` (`--dump-dom` or `--screenshot=PATH`) and
/// returns what it printed.
pub fn headless(browser: &str, page: &Path, mode: &str) -> Vec<u8> {
    let page = std::fs::canonicalize(page).expect("the page was written");
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1400,420",
            mode,
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(output.status.success(), "chromium failed: {output:?}");
    output.stdout
}

/// How often `needle` occurs in `dom`.
pub fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}
