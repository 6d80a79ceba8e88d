//! Real network peers for the delivery tests: a Kafka-protocol broker (tansu), an
//! independent Kafka consumer (Python confluent-kafka) and an OTLP receiver (Python grpcio +
//! the official opentelemetry-proto classes), all from the venv `tests/peers/setup.sh` makes.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::read_lines;

/// The peers' venv, created on first use (`tests/peers/setup.sh`, ~15 s cold).
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new(root.join("tests/peers/setup.sh"))
            .status()
            .expect("run tests/peers/setup.sh");
        assert!(status.success(), "tests/peers/setup.sh failed");
        std::env::var_os("KOLLATE_PEERS_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv-peers"))
    })
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tansu Kafka broker on loopback (memory storage), killed on drop.
pub struct Broker {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    /// The port clients are told to use (a [`Proxy`] in front of it, or `port`).
    pub advertised: u16,
}

impl Broker {
    /// Starts a broker on a free port.
    pub fn start() -> Broker {
        let port = free_port();
        Broker::start_advertising(port, port)
    }

    /// Starts a broker on `port` that tells clients to connect to `advertised`.
    pub fn start_advertising(port: u16, advertised: u16) -> Broker {
        let child = Command::new(venv().join("bin/tansu"))
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{advertised}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        wait_for_port(port, Duration::from_secs(10));
        Broker {
            child: Some(child),
            port,
            advertised,
        }
    }

    /// `127.0.0.1:PORT` of the advertised listener.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(venv().join("bin/tansu"))
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.port),
                "--partitions",
                &partitions.to_string(),
                topic,
            ])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .output()
            .expect("run tansu topic create");
        assert!(
            out.status.success(),
            "tansu topic create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every message of `topics` as the independent consumer reads them (stops after
    /// `expect` messages, or when nothing arrives for `idle` seconds).
    pub fn consume(&self, topics: &[&str], expect: usize, idle: u64) -> Vec<Value> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut cmd = Command::new(venv().join("bin/python"));
        cmd.arg(root.join("tests/peers/kafka_consume.py"))
            .args(["--bootstrap", &self.bootstrap()])
            .args(["--expect", &expect.to_string()])
            .args(["--idle-timeout", &idle.to_string()])
            .args(["--timeout", "300"]);
        for t in topics {
            cmd.args(["--topic", t]);
        }
        let out = cmd.output().expect("run kafka_consume.py");
        assert!(
            out.status.success(),
            "kafka_consume.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP forwarder that can cut every connection and refuse new ones: a network outage
/// between kollate and a peer that keeps its data.
pub struct Proxy {
    /// The port clients connect to.
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    /// Forwards `port` (or a free one) to `target`.
    pub fn start(port: u16, target: u16) -> Proxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let (up2, gen2) = (up.clone(), generation.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let born = gen2.load(Ordering::SeqCst);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (up3, gen3) = (up2.clone(), gen2.clone());
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            if !up3.load(Ordering::SeqCst) || gen3.load(Ordering::SeqCst) != born {
                                break;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            port,
            up,
            generation,
        }
    }

    /// Cuts every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        use std::sync::atomic::Ordering;
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The OTLP logs receiver (`tests/peers/otlp_receiver.py`), killed on drop.
pub struct OtlpReceiver {
    child: Child,
    /// gRPC port.
    pub grpc_port: u16,
    /// HTTP port.
    pub http_port: u16,
    /// One JSON line per received record.
    pub out: PathBuf,
    /// One JSON line per request's headers.
    pub headers_out: PathBuf,
    /// Request counts (accepted, refused).
    pub stats: PathBuf,
}

impl OtlpReceiver {
    /// Starts a receiver writing under `dir`, refusing every request for `unavailable_for`.
    pub fn start(dir: &Path, unavailable_for: Duration) -> OtlpReceiver {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (grpc_port, http_port) = (free_port(), free_port());
        let ready = dir.join("otlp-ready");
        let out = dir.join("otlp-records.jsonl");
        let headers_out = dir.join("otlp-headers.jsonl");
        let stats = dir.join("otlp-stats.json");
        let child = Command::new(venv().join("bin/python"))
            .arg(root.join("tests/peers/otlp_receiver.py"))
            .args(["--grpc-port", &grpc_port.to_string()])
            .args(["--http-port", &http_port.to_string()])
            .arg("--out")
            .arg(&out)
            .arg("--headers-out")
            .arg(&headers_out)
            .arg("--stats-file")
            .arg(&stats)
            .arg("--ready-file")
            .arg(&ready)
            .args([
                "--unavailable-for",
                &unavailable_for.as_secs_f64().to_string(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start otlp_receiver.py");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "OTLP receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        OtlpReceiver {
            child,
            grpc_port,
            http_port,
            out,
            headers_out,
            stats,
        }
    }

    /// The records received so far.
    pub fn records(&self) -> Vec<Value> {
        read_lines(&self.out)
    }

    /// The headers of every request so far.
    pub fn requests(&self) -> Vec<Value> {
        read_lines(&self.headers_out)
    }

    /// Waits until `n` records arrived (or `within` passed); returns them.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let records = self.records();
            if records.len() >= n || Instant::now() > deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
