//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod fake_apiserver;
pub mod peers;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Builds the plugins under `plugins/` once per test binary (`plugins/build.sh`: Rust
/// through the SDK, Python through componentize-py); the folder holding the `.wasm` files.
pub fn plugins() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let status = std::process::Command::new(root.join("plugins/build.sh"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run plugins/build.sh");
        assert!(status.success(), "plugins/build.sh failed");
        root.join("plugins/target/wasm")
    })
}

/// A plain HTTP/1.1 GET over TCP: (status, body).
pub fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `n` generated events (`kollate generate`) in `dir/events.jsonl`; `mixed_apis` writes a
/// share in the events.k8s.io/v1 shape.
pub fn generated_events(dir: &Path, n: u64, mixed_apis: bool) -> PathBuf {
    let path = dir.join("events.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let opts = kollate::generate::GenerateOptions {
        events: n,
        mixed_apis,
        ..Default::default()
    };
    kollate::generate::generate(&opts, &mut out).unwrap();
    out.flush().unwrap();
    path
}

/// The complete JSON lines of a file (a line being written may be seen half-way; nothing
/// when the file does not exist).
pub fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
