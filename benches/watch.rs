//! Whole-process benchmark of the `kubernetes_events` source: the project's fake API
//! server streams events as fast as it can over a watch; kollate ships them to the console
//! sink as JSON (to /dev/null). Reports events/s and kollate's CPU time.
//!
//!     cargo bench --bench watch [-- EVENTS]
//!
//! Not a test: it asserts nothing; it measures.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::fake_apiserver::{FakeApiServer, core_event};
use support::http_get;

fn sent(port: u16) -> u64 {
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        return 0;
    }
    let (_, body) = http_get(port, "/metrics", None);
    body.lines()
        .find(|l| l.starts_with("kollate_component_sent_events_total{component_id=\"cluster\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let events: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let server = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("kollate.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[api]\nenabled = true\naddress = \"127.0.0.1:{port}\"\n\
             [sources.cluster]\ntype = \"kubernetes_events\"\napi = \"core/v1\"\nstart_at = \"now\"\nkubeconfig = {:?}\nbatch_size = 512\n\
             [sinks.out]\ntype = \"console\"\ninputs = [\"cluster\"]\nformat = \"json\"\n",
            dir.path().join("data").display().to_string(),
            dir.path().join("kubeconfig").display().to_string(),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kollate"))
        .args(["--log-level", "warn", "run", "--no-progress", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the watch to be open (the first bookmark means it is).
    while sent(port) == 0 && server.requests().1 == 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let cpu_before = cpu_seconds(child.id());
    let start = Instant::now();
    for i in 0..events {
        server.apply(core_event(
            &format!("e-{i}"),
            if i % 3 == 0 { "shop" } else { "ops" },
            "BackOff",
            1,
        ));
    }
    while sent(port) < events {
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(child.id()) - cpu_before;
    // SAFETY: a signal to our own child.
    unsafe { libc_kill(child.id() as i32, 15) };
    let _ = child.wait();
    println!(
        "watch -> console(json): {events} events in {elapsed:.2}s = {:.0} events/s; kollate CPU {cpu:.2}s = {:.0} events per CPU-second",
        events as f64 / elapsed,
        events as f64 / cpu.max(1e-9)
    );
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}
