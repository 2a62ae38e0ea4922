//! A real Triton Inference Server for the remote-engine tests: the `tritonserver` of the
//! `nvidia-pytriton` wheel that `scripts/setup.sh --test` unpacks into `.deps/triton/`
//! (`OMNITOK_TRITON_DIR` overrides), started on a free loopback port, stopped on drop. Its
//! Python backend has no ONNX Runtime backend, so [`python_repository`] turns the repository
//! `omnitok-export --triton-repository` writes into one whose models run through
//! `tests/triton/model.py` (the `onnxruntime` wheel).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use omnitok_export::triton::{self, InstanceKind, TritonOptions};

/// How long a server may take to answer ready (two tiny models on 2 loaded cores take
/// about 10 s).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The checkout's root (this file serves the plugin's tests and the root's benchmark).
fn root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("Cargo.lock").is_file() {
        assert!(dir.pop(), "no Cargo.lock above {}", env!("CARGO_MANIFEST_DIR"));
    }
    dir
}

/// The unpacked server: `bin/tritonserver`, `lib/`, `backends/python/`, `site/`.
pub fn triton_dir() -> PathBuf {
    let dir = std::env::var_os("OMNITOK_TRITON_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".deps/triton"));
    assert!(
        dir.join("bin/tritonserver").is_file(),
        "no Triton Inference Server in {}: run scripts/setup.sh --test (or set OMNITOK_TRITON_DIR)",
        dir.display()
    );
    dir
}

/// The repository's options for the tests: CPU instances, a dynamic-batching window wide
/// enough that concurrent pipelines' requests meet.
pub fn test_options(name: &str) -> TritonOptions {
    TritonOptions {
        name: name.into(),
        kind: InstanceKind::Cpu,
        queue_delay_us: 20_000,
        ..Default::default()
    }
}

/// Writes the production repository of `models` (encoder.onnx, decoder.onnx) into `dir`.
pub fn production_repository(models: &Path, dir: &Path, opts: &TritonOptions) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    triton::write_repository_for_files(dir, opts, &[&models.join("encoder.onnx"), &models.join("decoder.onnx")])
        .unwrap();
    dir.to_path_buf()
}

/// The repository of `models` as the exporter writes it, served by the Python backend:
/// `platform: "onnxruntime_onnx"` becomes `backend: "python"` plus the path of the
/// onnxruntime package and `params` (model.py's `omnitok_test.*` settings), and `model.py`
/// joins each version folder. Everything else (I/O, batching, the omnitok parameters) is the
/// exporter's.
pub fn python_repository(models: &Path, dir: &Path, opts: &TritonOptions, params: &[(&str, &str)]) -> PathBuf {
    production_repository(models, dir, opts);
    let site = triton_dir().join("site");
    let model_py = root().join("tests/triton/model.py");
    let mut extra = String::new();
    for (k, v) in params {
        extra += &format!("parameters {{ key: \"omnitok_test.{k}\" value: {{ string_value: \"{v}\" }} }}\n");
    }
    for role in ["encoder", "decoder"] {
        let folder = dir.join(format!("{}_{role}", opts.name));
        let config = folder.join("config.pbtxt");
        let text = std::fs::read_to_string(&config).unwrap();
        let platform = "platform: \"onnxruntime_onnx\"\n";
        assert!(text.contains(platform), "{text}");
        let text = text.replace(
            platform,
            &format!(
                "backend: \"python\"\nparameters {{ key: \"omnitok_test.onnxruntime_path\" value: {{ string_value: \"{}\" }} }}\n{extra}",
                site.display()
            ),
        );
        std::fs::write(&config, text).unwrap();
        std::fs::copy(&model_py, folder.join("1/model.py")).unwrap();
    }
    dir.to_path_buf()
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `tritonserver` (killed and reaped on drop).
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
    repository: PathBuf,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into()
}

fn answer(sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<(u16, String), String> {
    let mut r = sent.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    Ok((status, r.body_mut().read_to_string().unwrap_or_default()))
}

fn get(url: &str) -> Result<(u16, String), String> {
    answer(agent().get(url).call())
}

fn post(url: &str, body: &str) -> Result<(u16, String), String> {
    answer(
        agent()
            .post(url)
            .header("Content-Type", "application/json")
            .send(body.as_bytes()),
    )
}

impl Server {
    /// Starts a server on `repository` at a free port and waits until it answers ready.
    pub fn start(repository: &Path) -> Self {
        Self::start_on(repository, free_port(), true)
    }

    /// Starts on `port`; `ready`: wait for `/v2/health/ready`, else only for
    /// `/v2/health/live` (a server whose models failed to load is live, not ready).
    pub fn start_on(repository: &Path, port: u16, ready: bool) -> Self {
        let dir = triton_dir();
        let log = repository.with_extension(format!("{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(dir.join("bin/tritonserver"));
        // The server dies with the test thread that started it, even when the test
        // process aborts (its Python-backend stubs follow their parent).
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .arg(format!("--model-repository={}", repository.display()))
            .arg(format!("--backend-directory={}", dir.join("backends").display()))
            .arg(format!("--http-port={port}"))
            .args([
                "--http-address=127.0.0.1",
                "--allow-grpc=false",
                "--allow-metrics=false",
                "--exit-on-error=false",
                "--strict-readiness=true",
                "--exit-timeout-secs=5",
            ])
            .env("LD_LIBRARY_PATH", dir.join("lib"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", dir.join("bin/tritonserver").display()));
        let mut server = Self {
            child: Some(child),
            port,
            log,
            repository: repository.to_path_buf(),
        };
        server.wait(ready);
        server
    }

    fn wait(&mut self, ready: bool) {
        let what = if ready { "ready" } else { "live" };
        let url = format!("{}/v2/health/{what}", self.url());
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = get(&url) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "tritonserver exited ({status}) before it was {what}:\n{}",
                    self.log_tail()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "tritonserver was not {what} within {START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// GET `path` on the server: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        get(&format!("{}{path}", self.url())).unwrap()
    }

    /// POST `/v2/repository/index`: every model's state and reason.
    pub fn index(&self) -> serde_json::Value {
        let (status, body) = post(&format!("{}/v2/repository/index", self.url()), "{}").unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `(inference_count, execution_count)` of `model`'s statistics: chunks run and
    /// server runs (fewer runs than chunks: the dynamic batcher joined requests).
    pub fn counts(&self, model: &str) -> (u64, u64) {
        let (status, body) = self.get(&format!("/v2/models/{model}/stats"));
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let s = &v["model_stats"][0];
        (
            s["inference_count"].as_u64().unwrap(),
            s["execution_count"].as_u64().unwrap(),
        )
    }

    /// Kills the server at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same repository again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        *self = Self::start_on(&self.repository.clone(), self.port, true);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
