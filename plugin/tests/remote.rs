//! omnitokenc / omnitokdec against a real Triton Inference Server (the pytriton wheel's
//! `tritonserver`, CPU, Python backend; `scripts/setup.sh --test`), on the repository
//! `omnitok-export --triton-repository` writes: tokens and frames through the server equal
//! local ONNX Runtime's byte for byte; four pipelines share one server and its dynamic
//! batcher; a server killed mid-stream is a clear error that keeps what was pushed; retries
//! ride over a restart; wrong names, refused connections and unsupported URLs are clear
//! errors; Triton's own parser accepts the production configs.

mod support;
#[path = "support/triton.rs"]
mod triton;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gst::prelude::*;
use omnitok_export::triton::TensorRtOptions;
use support::{Player, init};
use triton::{Server, production_repository, python_repository, test_options};

/// The tiny preset with a seed no other test uses.
fn models() -> PathBuf {
    support::export("tiny", 4711)
}

fn carphone() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deps/videos/carphone_pristine.mp4");
    assert!(p.is_file(), "{} is missing: run scripts/setup.sh", p.display());
    p
}

/// A served test repository of the tiny models, and its server.
fn serve(name: &str) -> Server {
    let dir = support::scratch(&format!("triton-{name}"));
    let repo = python_repository(
        &models(),
        &dir.join("repo"),
        &test_options("tiny"),
        &[("intra_op_threads", "1")],
    );
    Server::start(&repo)
}

/// The element settings: local (`model-file`) or through `server`.
fn engine(role: &str, server: Option<&Server>, extra: &str) -> String {
    match server {
        Some(s) => format!("inference-server={} inference-model=tiny_{role} {extra}", s.url()),
        None => format!("model-file={} {extra}", models().join(format!("{role}.onnx")).display()),
    }
}

/// The sample video (120 frames), 88x72 RGB (the tiny model pads to multiples of 8).
fn carphone_source() -> String {
    format!(
        "filesrc location={} ! decodebin ! videoconvert ! videoscale ! video/x-raw,format=RGB,width=88,height=72",
        carphone().display()
    )
}

/// A synthetic source slowed to 15 ms a frame, so a test can act mid-stream.
fn slow_source(frames: u32) -> String {
    format!(
        "videotestsrc pattern=ball num-buffers={frames} ! video/x-raw,format=RGB,width=48,height=32,framerate=25/1 ! \
         identity sleep-time=15000"
    )
}

fn bytes(sample: &gst::Sample) -> Vec<u8> {
    sample.buffer().unwrap().map_readable().unwrap().to_vec()
}

/// Every buffer the pipeline `launch` (ending in `appsink name=out`) renders, as bytes;
/// panics unless it reached EOS without an error.
fn buffers(launch: &str) -> Vec<Vec<u8>> {
    let p = Player::new(launch);
    let out = p.play_to_end();
    assert!(out.eos && out.errors.is_empty(), "{launch}: {:?}", out.errors);
    p.take_samples().iter().map(bytes).collect()
}

fn encode(source: &str, server: Option<&Server>, extra: &str) -> Vec<Vec<u8>> {
    buffers(&format!(
        "{source} ! omnitokenc {} ! appsink name=out",
        engine("encoder", server, extra)
    ))
}

/// Chunks `tokens` (an encoder's buffers) written to a file and decoded: every frame.
fn decode(tokens: &[Vec<u8>], server: Option<&Server>, file: &Path) -> Vec<Vec<u8>> {
    std::fs::write(file, tokens.concat()).unwrap();
    buffers(&format!(
        "filesrc location={} ! omnitokparse ! omnitokdec {} ! appsink name=out",
        file.display(),
        engine("decoder", server, "")
    ))
}

/// The error a pipeline posts when it cannot start.
fn start_error(launch: &str) -> String {
    let p = Player::new(launch);
    let out = p.play_to_end();
    assert!(!out.eos, "{launch} should fail");
    let (msg, _) = out
        .errors
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("{launch}: no error"));
    msg
}

#[test]
fn the_server_encodes_and_decodes_like_local_inference() {
    init();
    let server = serve("shared");
    let scratch = support::scratch("remote-roundtrip");

    // A real sample video, batch 1 and batch 2: the token stream is the local one, byte
    // for byte (the header too: identity and geometry come from the server's config).
    let local = encode(&carphone_source(), None, "");
    assert_eq!(local.len(), 25, "a header and 120 frames in chunks of 5");
    for batch in ["batch-size=1", "batch-size=2"] {
        let remote = encode(&carphone_source(), Some(&server), batch);
        let differ: Vec<usize> = (0..local.len().min(remote.len()))
            .filter(|&i| remote[i] != local[i])
            .collect();
        assert!(
            remote == local,
            "{batch}: remote tokens differ from local ones: {} vs {} buffers, differing {differ:?}",
            remote.len(),
            local.len()
        );
    }
    let frames = decode(&local, None, &scratch.join("local.omnitok"));
    assert_eq!(frames.len(), 120);
    let remote_frames = decode(&local, Some(&server), &scratch.join("remote.omnitok"));
    assert!(remote_frames == frames, "remote frames differ from local ones");

    // Four pipelines at once share the server: each gets its own tokens, and the dynamic
    // batcher joined requests of different pipelines (fewer server runs than chunks).
    let (chunks_before, runs_before) = server.counts("tiny_encoder");
    let sources: Vec<String> = ["ball", "smpte", "snow", "pinwheel"]
        .iter()
        .map(|p| {
            format!(
                "videotestsrc pattern={p} num-buffers=40 ! video/x-raw,format=RGB,width=48,height=32,framerate=25/1"
            )
        })
        .collect();
    let want: Vec<_> = sources.iter().map(|s| encode(s, None, "")).collect();
    let got: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = sources
            .iter()
            .map(|s| scope.spawn(|| encode(s, Some(&server), "")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(w.len(), 9, "a header and 8 chunks");
        assert!(g == w, "pipeline {i}: remote tokens differ from local ones");
    }
    let (chunks, runs) = server.counts("tiny_encoder");
    let (chunks, runs) = (chunks - chunks_before, runs - runs_before);
    assert_eq!(chunks, 32, "4 pipelines x 8 chunks");
    assert!(
        runs < chunks,
        "no request was batched with another: {runs} runs for {chunks} chunks"
    );
    eprintln!("4 pipelines: {chunks} chunks in {runs} server runs");

    // A name the server does not have, and a model of the other role.
    let source = "videotestsrc num-buffers=5 ! video/x-raw,format=RGB,width=48,height=32";
    let e = start_error(&format!(
        "{source} ! omnitokenc inference-server={} inference-model=tiny_encodr ! appsink name=out",
        server.url()
    ));
    assert_eq!(
        e,
        format!(
            "inference server {} has no model 'tiny_encodr' (it has: tiny_decoder, tiny_encoder)",
            server.url()
        )
    );
    let e = start_error(&format!(
        "{source} ! omnitokenc inference-server={} inference-model=tiny_decoder ! appsink name=out",
        server.url()
    ));
    assert!(
        e.contains("model 'tiny_decoder' on") && e.contains("it is a decoder graph, but this element needs an encoder"),
        "{e}"
    );
    let enc = gst::ElementFactory::make("omnitokenc")
        .property("inference-server", server.url())
        .property("inference-model", "tiny_encoder")
        .build()
        .unwrap();
    enc.set_state(gst::State::Ready).unwrap();
    assert_eq!(
        enc.property_value("active-execution-provider")
            .get::<gstomnitok::runtime::ExecutionProvider>()
            .unwrap()
            .nick(),
        "remote"
    );
    enc.set_state(gst::State::Null).unwrap();
}

#[test]
fn unreachable_or_unsupported_servers_are_clear_errors() {
    init();
    let source = "videotestsrc num-buffers=5 ! video/x-raw,format=RGB,width=48,height=32";
    let port = triton::free_port();
    let e = start_error(&format!(
        "{source} ! omnitokenc inference-server=http://127.0.0.1:{port} inference-model=m ! appsink name=out"
    ));
    assert!(
        e.starts_with(&format!(
            "inference server http://127.0.0.1:{port} is not reachable: cannot connect"
        )) && e.contains("refused"),
        "{e}"
    );
    // Retries: one warning each, bounded, then the same error.
    let p = Player::new(&format!(
        "{source} ! omnitokenc inference-server=http://127.0.0.1:{port} inference-model=m inference-retries=2 ! appsink name=out"
    ));
    let started = Instant::now();
    let out = p.play_to_end();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
    assert!(out.warnings[1].contains("retry 2 of 2"), "{:?}", out.warnings);
    assert!(out.errors[0].0.contains("is not reachable"), "{:?}", out.errors);
    let e = start_error(&format!(
        "{source} ! omnitokenc inference-server=grpc://127.0.0.1:8001 inference-model=m ! appsink name=out"
    ));
    assert!(e.contains("gRPC is not supported"), "{e}");
    let e = start_error(&format!(
        "{source} ! omnitokenc inference-server=http://127.0.0.1:{port} ! appsink name=out"
    ));
    assert!(
        e.starts_with("inference-server is set but inference-model is not"),
        "{e}"
    );
    // A timeout, not a hang: a listener that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let e = start_error(&format!(
        "{source} ! omnitokenc inference-server={url} inference-model=m inference-timeout=500 ! appsink name=out"
    ));
    assert!(e.contains("no answer from") && e.contains("within 500ms"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Plays `launch` until `chunks` buffers arrived, then runs `act`; returns the outcome and
/// every buffer rendered.
fn act_mid_stream(launch: &str, chunks: usize, act: impl FnOnce()) -> (support::Outcome, Vec<Vec<u8>>) {
    let p = Player::new(launch);
    assert!(p.start());
    let mut got = Vec::new();
    let started = Instant::now();
    while got.len() < chunks {
        got.extend(p.take_samples().iter().map(bytes));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no {chunks} chunks in 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    act();
    let out = p.wait_end(true);
    got.extend(p.take_samples().iter().map(bytes));
    (out, got)
}

/// A server of its own, the local encoding of a slow source of `frames` frames, and the
/// pipeline that encodes it through the server with `extra` settings.
fn slow_stream(name: &str, frames: u32, extra: &str) -> (Server, Vec<Vec<u8>>, String) {
    let server = serve(name);
    let local = encode(&slow_source(frames), None, "");
    let launch = format!(
        "{} ! omnitokenc {} ! appsink name=out",
        slow_source(frames),
        engine("encoder", Some(&server), extra)
    );
    (server, local, launch)
}

#[test]
fn a_server_killed_mid_stream_is_an_error_and_keeps_what_was_pushed() {
    init();
    let (mut server, local, launch) = slow_stream("kill", 150, "");
    assert_eq!(local.len(), 31, "a header and 30 chunks");
    let started = Instant::now();
    let (out, got) = act_mid_stream(&launch, 4, || server.kill());
    assert!(started.elapsed() < Duration::from_secs(60), "no hang");
    assert!(!out.eos);
    let (msg, _) = &out.errors[0];
    assert!(
        msg.contains("inference server: model 'tiny_encoder': cannot connect to"),
        "{msg}"
    );
    assert!(got.len() >= 4 && got.len() < local.len(), "{} buffers", got.len());
    assert!(
        got[..] == local[..got.len()],
        "the chunks pushed before are the local ones"
    );
}

#[test]
fn retries_ride_over_a_server_restart() {
    init();
    let (mut server, local, launch) = slow_stream("restart", 100, "inference-retries=25");
    assert_eq!(local.len(), 21, "a header and 20 chunks");
    let (out, got) = act_mid_stream(&launch, 4, || server.restart());
    assert!(out.eos && out.errors.is_empty(), "{:?}", out.errors);
    assert!(
        !out.warnings.is_empty() && out.warnings[0].contains("retry 1 of 25"),
        "{:?}",
        out.warnings
    );
    assert!(got == local, "every chunk, as local inference makes it");
}

#[test]
fn a_stop_cuts_a_retry_series_short() {
    init();
    // 100 retries would back off for minutes once the server is gone.
    let (mut server, local, launch) = slow_stream("interrupt", 100, "inference-retries=100");
    let p = Player::new(&launch);
    assert!(p.start());
    let bus = p.pipeline.bus().unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    while got.len() < 4 {
        got.extend(p.take_samples().iter().map(bytes));
        assert!(started.elapsed() < Duration::from_secs(60), "no 4 chunks in 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Errors posted from now on, also while the pipeline stops (NULL drops queued messages).
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = errors.clone();
    let (warned_tx, warned) = std::sync::mpsc::channel();
    bus.set_sync_handler(move |_, m| {
        match m.view() {
            gst::MessageView::Error(e) => seen.lock().unwrap().push(e.error().to_string()),
            gst::MessageView::Warning(_) => {
                let _ = warned_tx.send(());
            }
            _ => {}
        }
        gst::BusSyncReply::Pass
    });
    server.kill();
    // The first retry warning: a retry series is under way.
    assert!(
        warned.recv_timeout(Duration::from_secs(60)).is_ok(),
        "no retry warning within 60 s of the kill"
    );
    let stopping = Instant::now();
    p.pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "stopping waited {:?} for the retries",
        stopping.elapsed()
    );
    got.extend(p.take_samples().iter().map(bytes));
    assert!(got[..] == local[..got.len()], "what was pushed is the local encoding");
    // Cut short by a stop, not an error.
    let errors = errors.lock().unwrap();
    assert!(errors.is_empty(), "a stop is not an error: {errors:?}");
}

/// Triton's own config parser on the production repository: with the pytriton server
/// (no onnxruntime backend) a parsed config fails only at finding the backend; a config
/// Triton cannot parse fails with a parse error instead.
#[test]
fn the_production_repository_parses_in_triton() {
    init();
    let dir = support::scratch("triton-production");
    let mut trt = test_options("trt");
    trt.kind = omnitok_export::triton::InstanceKind::Gpu;
    trt.tensorrt = Some(TensorRtOptions {
        fp16: true,
        engine_cache: Some("/cache/trt".into()),
        workspace_bytes: 1 << 30,
        profile: Some([5, 32, 48]),
    });
    // Both option sets in one repository.
    let repo = production_repository(&models(), &dir.join("repo"), &test_options("tiny"));
    omnitok_export::triton::write_repository_for_files(
        &repo,
        &trt,
        &[&models().join("encoder.onnx"), &models().join("decoder.onnx")],
    )
    .unwrap();
    // And one the parser must refuse.
    let broken = repo.join("broken");
    std::fs::create_dir_all(broken.join("1")).unwrap();
    let text = std::fs::read_to_string(repo.join("tiny_encoder/config.pbtxt")).unwrap();
    std::fs::write(
        broken.join("config.pbtxt"),
        text.replace("name: \"tiny_encoder\"", "name: \"broken\"\nmax_batch_sizes: 4"),
    )
    .unwrap();
    std::fs::copy(repo.join("tiny_encoder/1/model.onnx"), broken.join("1/model.onnx")).unwrap();

    let server = Server::start_on(&repo, triton::free_port(), false);
    let index = server.index();
    let reason = |name: &str| -> String {
        index
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {index}"))["reason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    for name in ["tiny_encoder", "tiny_decoder", "trt_encoder", "trt_decoder"] {
        let r = reason(name);
        assert!(
            r.contains("unable to find backend library for backend 'onnxruntime'"),
            "{name}: {r}\n{}",
            server.log_tail()
        );
    }
    // An element pointed at this server is told why it cannot use it (models that did not
    // load make a strict server not ready).
    let e = start_error(&format!(
        "videotestsrc num-buffers=5 ! video/x-raw,format=RGB,width=48,height=32 ! omnitokenc \
         inference-server={} inference-model=tiny_encoder ! appsink name=out",
        server.url()
    ));
    assert!(
        e.starts_with(&format!("inference server {} is not ready", server.url())),
        "{e}"
    );
    // The parser refuses the broken config before any backend is looked for: the index
    // knows the folder only by name (no version, no state), and the log names the field.
    let broken = index
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "broken")
        .unwrap();
    assert!(
        broken.get("state").is_none() && broken.get("version").is_none(),
        "{broken}"
    );
    let log = server.log();
    assert!(
        log.contains("has no field named \"max_batch_sizes\"") && log.contains("failed to read text proto"),
        "{log}"
    );
}
