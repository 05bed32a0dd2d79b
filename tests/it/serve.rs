//! `wms-serve` acceptance (issue 4): parity of served masks with the library, bad inputs, the
//! three APIs' shapes, batching under load, readiness and SIGTERM draining. Routers are driven
//! with `oneshot` where no socket is needed; the load, shutdown and browser tests run the real
//! binary on loopback ports it picks itself. Every wait is bounded.

use std::io::{BufRead, BufReader, Cursor};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use http_body_util::BodyExt;
use image::{GrayImage, ImageFormat, Rgb, RgbImage};
use tower::ServiceExt;
use wms::cli::serve::ServeArgs;
use wms::data::preprocess::PreprocessSpec;
use wms::env_vars;
use wms::model::ModelSpec;
use wms::serve::{AppState, Engine, ServeSettings, SharedState, inference, management, metrics};

use crate::util::bin;

/// Model input of the test model: small (fast) and not square (catches W/H mix-ups).
const INPUT_W: u32 = 160;
const INPUT_H: u32 = 128;

/// A tiny random U-Net (base 4) exported by the library's own exporter. Random weights put
/// nearly every pixel on one side of the threshold, so the final bias is shifted to the median
/// logit of the fixture photo: about half of its pixels are foreground and masks say something.
fn fixture_model(dir: &Path) -> PathBuf {
    let spec = ModelSpec {
        base_filters: 4,
        ..ModelSpec::default()
    };
    let mut ckpt = wms::onnx::fixtures::random_checkpoint(spec, 7);
    ckpt.meta.model_name = "meters".into();
    ckpt.meta.preprocessing = PreprocessSpec {
        input_width: INPUT_W,
        input_height: INPUT_H,
        ..PreprocessSpec::default()
    };
    let path = dir.join("meters.onnx");
    let export = |ckpt: &wms::checkpoint::Checkpoint| {
        let opts = wms::onnx::ExportOptions {
            version: "2.1".into(),
        };
        fs_err::write(&path, wms::onnx::export(ckpt, &opts).expect("export")).unwrap();
    };
    export(&ckpt);
    let engine = Engine::load(&path, None, 1, 1).unwrap();
    let input =
        wms::data::preprocess::preprocess_image(&photo(640, 480), &engine.info().preprocessing);
    let mut logits = engine.run(&[&input]).unwrap().remove(0);
    logits.sort_by(f32::total_cmp);
    let median = logits[logits.len() / 2];
    let bias = ckpt.tensors.get_mut("final.bias").unwrap();
    // Ties at the median (flat image regions) count as foreground.
    bias.data = wms::checkpoint::TensorData::F32(vec![bias.to_f32()[0] - median + 1e-4]);
    export(&ckpt);
    path
}

/// A synthetic "photo": a gradient with a bright disc, so the mask is not trivial.
fn photo(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (cx, cy) = (w as f32 * 0.6, h as f32 * 0.4);
        let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
        if d < h as f32 * 0.25 {
            Rgb([230, 220, 200])
        } else {
            Rgb([
                (x * 255 / w) as u8,
                (y * 255 / h) as u8,
                ((x + y) % 97) as u8,
            ])
        }
    })
}

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    encode(&photo(w, h), ImageFormat::Jpeg)
}

fn settings(model: &Path, extra: impl Fn(&mut ServeArgs)) -> ServeSettings {
    let mut args = ServeArgs {
        model: Some(model.to_path_buf()),
        ..ServeArgs::default()
    };
    extra(&mut args);
    args.settings(|_| None).unwrap()
}

async fn warm_state(settings: &ServeSettings) -> SharedState {
    let engines = wms::serve::load_engines(settings).await.unwrap();
    let state = AppState::new(engines, settings);
    state.warm_up().await.unwrap();
    state
}

async fn body_bytes(resp: axum::response::Response) -> Vec<u8> {
    resp.into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

async fn json(resp: axum::response::Response) -> serde_json::Value {
    let bytes = body_bytes(resp).await;
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

fn post(uri: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(uri).body(Body::from(body)).unwrap()
}

/// The mask computed in-process: library decoding + preprocessing, the engine, the threshold.
fn in_process_mask(model: &Path, photo_bytes: &[u8]) -> GrayImage {
    let engine = Engine::load(model, None, 1, 1).unwrap();
    let img = wms::data::preprocess::decode_image(photo_bytes).unwrap();
    let rgb = wms::data::preprocess::to_rgb(img);
    let input = wms::data::preprocess::preprocess_image(&rgb, &engine.info().preprocessing);
    let logits = engine.run(&[&input]).unwrap().remove(0);
    wms::serve::engine::mask_from_logits(&logits, INPUT_W, INPUT_H)
}

/// The `Server-Timing` header names every phase once, in order, with a positive forward
/// pass; the phases are disjoint stretches of the request, so they add up to at most `total`.
fn assert_server_timing(resp: &axum::response::Response) {
    let text = resp.headers()["server-timing"].to_str().unwrap();
    let mut phases = Vec::new();
    for entry in text.split(", ") {
        let mut parts = entry.split(';');
        let name = parts.next().unwrap();
        let dur: f64 = parts
            .find_map(|p| p.strip_prefix("dur="))
            .unwrap_or_else(|| panic!("no dur in {entry:?} of {text:?}"))
            .parse()
            .unwrap();
        phases.push((name, dur));
    }
    let names: Vec<&str> = phases.iter().map(|p| p.0).collect();
    assert_eq!(
        names,
        [
            "read",
            "preprocess",
            "queue",
            "compute",
            "postprocess",
            "total"
        ],
        "{text}"
    );
    assert!(
        text.contains(r#"compute;dur="#) && text.contains(r#"desc="batch of 1""#),
        "{text}"
    );
    let (parts, total) = (&phases[..5], phases[5].1);
    assert!(phases[3].1 > 0.0, "{text}");
    let sum: f64 = parts.iter().map(|p| p.1).sum();
    assert!(
        sum <= total + 0.005,
        "phases add up to {sum} ms > total {total} ms: {text}"
    );
}

#[tokio::test]
async fn served_mask_equals_the_in_process_mask_pixel_for_pixel() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture_model(dir.path());
    let s = settings(&model, |_| {});
    let state = warm_state(&s).await;
    let app = inference::app(state);
    let photo_bytes = jpeg(640, 480);
    let expected = in_process_mask(&model, &photo_bytes);
    let fg = expected.as_raw().iter().filter(|&&v| v == 255).count();
    assert!(
        fg > 0 && fg < expected.as_raw().len(),
        "fixture should give a mixed mask, got {fg} foreground pixels"
    );

    // PNG by default, at the photo's size (what TorchServe serving our .mar answers too).
    let photo_sized = wms::data::preprocess::resize_nearest_gray(&expected, 640, 480);
    let resp = app
        .clone()
        .oneshot(post("/predictions/meters", photo_bytes.clone()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "image/png");
    assert_server_timing(&resp);
    let served = image::load_from_memory(&body_bytes(resp).await)
        .unwrap()
        .to_luma8();
    assert_eq!(served.dimensions(), (640, 480));
    assert!(
        served == photo_sized,
        "served mask differs from the in-process mask"
    );

    // PUT, as TorchServe's documented `curl -T photo.jpg URL` sends it: the same answer.
    let req = Request::put("/predictions/meters")
        .body(Body::from(photo_bytes.clone()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let served = image::load_from_memory(&body_bytes(resp).await)
        .unwrap()
        .to_luma8();
    assert!(served == photo_sized, "PUT answered another mask");

    // `?size=model`: the network's own output size, the in-process mask itself.
    let resp = app
        .clone()
        .oneshot(post("/predictions/meters?size=model", photo_bytes.clone()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let served = image::load_from_memory(&body_bytes(resp).await)
        .unwrap()
        .to_luma8();
    assert_eq!(served.dimensions(), (INPUT_W, INPUT_H));
    assert!(
        served == expected,
        "served mask at the model's size differs from the in-process mask"
    );

    // JSON with Accept, versioned route, the photo's size asked for by name.
    let req = Request::post("/predictions/meters/2.1?size=original")
        .header(header::ACCEPT, "application/json")
        .body(Body::from(photo_bytes.clone()))
        .unwrap();
    let sent = Instant::now();
    let resp = app.clone().oneshot(req).await.unwrap();
    let round_trip_ms = sent.elapsed().as_secs_f64() * 1e3;
    assert_eq!(resp.status(), StatusCode::OK);
    let total_ms: f64 = resp.headers()["server-timing"]
        .to_str()
        .unwrap()
        .split(", ")
        .find_map(|e| e.strip_prefix("total;dur="))
        .expect("a total in Server-Timing")
        .parse()
        .unwrap();
    let v = json(resp).await;
    let meta = &v["metadata"];
    assert_eq!(meta["model_version"], "2.1");
    assert_eq!(meta["input_size"], serde_json::json!([INPUT_W, INPUT_H]));
    let coverage = meta["coverage"].as_f64().unwrap();
    let want = fg as f64 / expected.as_raw().len() as f64;
    assert!((coverage - want).abs() < 1e-9, "{coverage} vs {want}");
    // The request's own time: positive (a forward pass ran), the Server-Timing total to the
    // microsecond, and no more than the round trip the test saw.
    let latency_ms = meta["latency_ms"].as_f64().unwrap();
    assert!(
        latency_ms > 0.0 && (latency_ms - total_ms).abs() < 2e-3 && latency_ms <= round_trip_ms,
        "latency_ms {latency_ms}, Server-Timing total {total_ms}, round trip {round_trip_ms}"
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(v["mask_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(meta["mask_size"], serde_json::json!([640, 480]));
    let big = image::load_from_memory(&png).unwrap().to_luma8();
    assert_eq!(big.dimensions(), (640, 480));
    assert!(
        big == photo_sized,
        "JSON mask differs from the in-process mask"
    );

    // Upstream alias: multipart field `file`, JSON answer.
    let resp = app
        .clone()
        .oneshot(form_request("/predict", &[("file", &photo_bytes)]))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v = json(resp).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(v["mask_base64"].as_str().unwrap())
        .unwrap();
    assert!(image::load_from_memory(&png).unwrap().to_luma8() == photo_sized);

    // A form's `size` field, as TorchServe's handler reads it (TorchServe drops the query):
    // `size=model` gives the network's size even against the query, anything else is a 400.
    for (size, want) in [("model", Some(&expected)), ("huge", None)] {
        let fields: &[(&str, &[u8])] = &[("data", &photo_bytes), ("size", size.as_bytes())];
        let req = form_request("/predictions/meters?size=original", fields);
        let resp = app.clone().oneshot(req).await.unwrap();
        match want {
            Some(want) => {
                assert_eq!(resp.status(), StatusCode::OK);
                let got = image::load_from_memory(&body_bytes(resp).await)
                    .unwrap()
                    .to_luma8();
                assert!(&got == want, "size=model form field");
            }
            None => assert_eq!(resp.status(), StatusCode::BAD_REQUEST),
        }
    }
}

/// A `multipart/form-data` POST of `fields`; the image fields (`file`, `data`) as files.
/// `ort_shared_arena` (issue 18, the default): with one arena for the all-threads session and
/// both worker sessions, concurrent lane runs and a wide run give exactly the logits of an
/// engine whose sessions each have their own arena.
#[test]
fn a_shared_arena_gives_the_same_logits_as_separate_ones() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture_model(dir.path());
    let separate_memory = wms::serve::OrtMemory {
        shared_arena: false,
        ..wms::serve::OrtMemory::default()
    };
    assert!(wms::serve::OrtMemory::default().shared_arena);
    let separate = Engine::load_with(&model, None, 2, 2, separate_memory).unwrap();
    let shared = Engine::load(&model, None, 2, 2).unwrap();
    let inputs: Vec<Vec<f32>> = [(640, 480), (300, 500), (1000, 700)]
        .iter()
        .map(|&(w, h)| {
            wms::data::preprocess::preprocess_image(&photo(w, h), &separate.info().preprocessing)
        })
        .collect();
    // Each kind of session against the same kind (1 thread per lane, 2 for the wide one).
    let wide: Vec<Vec<f32>> = inputs
        .iter()
        .map(|i| separate.run(&[i]).unwrap().remove(0))
        .collect();
    let lane: Vec<Vec<f32>> = inputs
        .iter()
        .map(|i| separate.run_lane(&[i]).unwrap().remove(0))
        .collect();
    // Two lanes at once, each twice, beside the wide session: every session draws from the one
    // arena while another holds blocks of it.
    std::thread::scope(|s| {
        let lanes: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    for (i, want) in inputs.iter().zip(&lane).cycle().take(4) {
                        assert_eq!(&shared.run_lane(&[i]).unwrap()[0], want);
                    }
                })
            })
            .collect();
        for (i, want) in inputs.iter().zip(&wide) {
            assert_eq!(&shared.run(&[i]).unwrap()[0], want);
        }
        for lane in lanes {
            lane.join().unwrap();
        }
    });
}

fn form_request(uri: &str, fields: &[(&str, &[u8])]) -> Request<Body> {
    let boundary = "XyZ";
    let mut body = Vec::new();
    for (name, value) in fields {
        let file = if matches!(*name, "file" | "data") {
            "; filename=\"m.jpg\"\r\nContent-Type: image/jpeg"
        } else {
            ""
        };
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Request::post(uri)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn exif_orientation_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture_model(dir.path());
    let s = settings(&model, |_| {});
    let app = inference::app(warm_state(&s).await);
    // A 64×32 JPEG tagged "rotate 90° CW" (orientation 6) is a 32×64 photo.
    let plain = jpeg(64, 32);
    let tagged = with_exif_orientation(&plain, 6);
    let req = Request::post("/predictions/meters")
        .body(Body::from(tagged))
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mask = image::load_from_memory(&body_bytes(resp).await).unwrap();
    assert_eq!((mask.width(), mask.height()), (32, 64));
}

/// Inserts an APP1 Exif segment with one Orientation entry after the JPEG's SOI marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\x00\x2a\x00\x00\x00\x08"); // big-endian, IFD0 at 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A PNG whose header claims `w`×`h` pixels but holds almost no data (a decompression bomb's
/// first bytes are enough to refuse it).
fn png_header_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test]
async fn bad_inputs_get_a_4xx_json_error_and_the_server_stays_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture_model(dir.path());
    let cfg = dir.path().join("config.properties");
    fs_err::write(&cfg, "max_request_size=200000\nmax_image_pixels=4000000\n").unwrap();
    let s = settings(&model, |a| a.config = Some(cfg.clone()));
    let app = inference::app(warm_state(&s).await);
    let good = jpeg(320, 240);
    let gif = b"GIF89a\x02\x00\x02\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x02\x00\x02\x00\x00\x02\x02D\x01\x00;".to_vec();
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        ("empty body", vec![], StatusCode::BAD_REQUEST),
        (
            "not an image",
            b"{\"hello\": \"world\"}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "truncated JPEG",
            good[..good.len() / 2].to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        ("GIF", gif, StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (
            "over max_request_size",
            vec![0xFF; 300_000],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "decompression bomb",
            png_header_claiming(100_000, 100_000),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "16-bit PNG (max_image_bit_depth 8)",
            png_rgba16_zeros(64, 48),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (what, body, want) in cases {
        let resp = app
            .clone()
            .oneshot(post("/predictions/meters", body))
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "{what}");
        let v = json(resp).await;
        assert_eq!(v["code"], want.as_u16(), "{what}: {v}");
        let msg = v["message"].as_str().unwrap();
        assert!(
            !msg.is_empty() && !msg.contains("panicked"),
            "{what}: {msg}"
        );
    }
    // Wrong model / version and a bad query are 4xx too.
    for (uri, want) in [
        ("/predictions/nope", StatusCode::NOT_FOUND),
        ("/predictions/meters/9.9", StatusCode::NOT_FOUND),
        ("/predictions/meters?size=huge", StatusCode::BAD_REQUEST),
    ] {
        let resp = app.clone().oneshot(post(uri, good.clone())).await.unwrap();
        assert_eq!(resp.status(), want, "{uri}");
    }
    // Multipart without an image field.
    let req = Request::post("/predict")
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=b")
        .body(Body::from(
            "--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--b--\r\n",
        ))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let resp = app
        .clone()
        .oneshot(Request::get("/ping").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app
        .oneshot(post("/predictions/meters", good))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "a good request after bad ones"
    );
}

#[tokio::test]
async fn ping_is_503_until_warm_then_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture_model(dir.path());
    let s = settings(&model, |_| {});
    let engines = wms::serve::load_engines(&s).await.unwrap();
    let state = AppState::new(engines, &s);
    let app = inference::app(state.clone());
    for path in ["/ping", "/health"] {
        let resp = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
    let resp = app
        .clone()
        .oneshot(post("/predictions/meters", jpeg(64, 64)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key(header::RETRY_AFTER));
    state.warm_up().await.unwrap();
    let resp = app
        .oneshot(Request::get("/ping").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json(resp).await, serde_json::json!({"status": "Healthy"}));
}

#[tokio::test]
async fn management_and_metrics_apis_have_torchserve_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture_model(dir.path());
    let s = settings(&model, |_| {});
    let state = warm_state(&s).await;
    let mgmt = management::app(state.clone());
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    // Issue 17: the web page shows what is loaded (name, version).
    let page = body_bytes(
        inference::app(state.clone())
            .oneshot(get("/"))
            .await
            .unwrap(),
    )
    .await;
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.contains("<li><strong>meters</strong> version 2.1"),
        "{}",
        &page[..page.len().min(2000)]
    );

    let v = json(mgmt.clone().oneshot(get("/models")).await.unwrap()).await;
    assert_eq!(
        v,
        serde_json::json!({"models": [{"modelName": "meters", "modelUrl": "meters.onnx"}]})
    );
    let v = json(
        mgmt.clone()
            .oneshot(get("/models?limit=1&next_page_token=1"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["models"], serde_json::json!([]));
    let resp = mgmt.clone().oneshot(get("/models?limit=x")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    for uri in ["/models/meters", "/models/meters/all", "/models/meters/2.1"] {
        let resp = mgmt.clone().oneshot(get(uri)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        let v = json(resp).await;
        let d = &v[0];
        assert_eq!(d["modelName"], "meters", "{uri}");
        assert_eq!(d["modelVersion"], "2.1");
        assert_eq!(d["workers"][0]["status"], "READY");
        assert!(d["batchSize"].is_u64() && d["maxBatchDelay"].is_u64());
        // Issue 17: the process's resident bytes, not 0 (ONNX Runtime and the model alone hold
        // more than a MiB).
        let memory = d["workers"][0]["memoryUsage"].as_u64().unwrap();
        let now = wms::memory::resident_bytes().unwrap();
        assert!(memory > 1 << 20 && memory < 2 * now, "{memory} vs {now}");
    }
    for uri in ["/models/other", "/models/meters/3.0"] {
        let resp = mgmt.clone().oneshot(get(uri)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{uri}");
    }

    let app = inference::app(state.clone());
    let resp = app
        .oneshot(post("/predictions/meters", jpeg(64, 48)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = metrics::app(state).oneshot(get("/metrics")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(body_bytes(resp).await).unwrap();
    for needle in [
        r#"wms_inference_total{model="meters",version="2.1",status="200"} 1"#,
        "wms_inference_latency_seconds_bucket{",
        "wms_inference_queue_seconds_count{",
        "wms_inference_compute_seconds_count{",
        "wms_inference_batch_size_count{",
        r#"wms_model_loaded{model="meters",version="2.1"} 1"#,
        "wms_inflight_requests 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

/// The real binary ([`crate::util::ServeProcess`]) serving the fixture model from its own temp dir.
struct Server {
    process: crate::util::ServeProcess,
    model: PathBuf,
    _dir: tempfile::TempDir,
}

/// `server.inference`, `server.child`, … are the process's.
impl std::ops::Deref for Server {
    type Target = crate::util::ServeProcess;
    fn deref(&self) -> &Self::Target {
        &self.process
    }
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Server::start_with_env(extra, &[])
    }

    /// With `WMS_SERVE_*` variables (the `config.properties` keys without flags).
    fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let model = fixture_model(dir.path());
        let process = crate::util::ServeProcess::start_with_env(&model, extra, env);
        Server {
            process,
            model,
            _dir: dir,
        }
    }

    async fn wait_healthy(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = client.get(format!("{}/ping", self.inference)).send().await;
            if let Ok(r) = r {
                if r.status() == reqwest::StatusCode::OK {
                    return;
                }
                assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
            }
            assert!(Instant::now() < deadline, "wms-serve not healthy in 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A `kB` line of `/proc/<pid>/status`, in bytes: `VmHWM` (peak resident) or `VmRSS`.
    fn memory(&self, key: &str) -> u64 {
        let status = fs_err::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in /proc/pid/status"));
        line.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .unwrap()
            * 1024
    }

    /// Sockets the server process holds open (its listeners and accepted connections).
    fn open_sockets(&self) -> usize {
        fs_err::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|l| l.to_string_lossy().starts_with("socket:"))
            .count()
    }

    fn sigterm(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.process.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wms-serve still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .unwrap()
}

/// `wms_inference_batch_size` histogram: (observations, observations of size 1).
fn batch_histogram(text: &str) -> (u64, u64) {
    let value = |prefix: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with("wms_inference_batch_size") && l.contains(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    (value("_count{"), value("le=\"1.0\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_clients_are_batched_without_errors() {
    // Two workers: batches that queue up run side by side on single-thread sessions, a lone
    // one on the two-thread session; every mask must still be the library's.
    let server = Server::start(&[
        "--batch-size",
        "8",
        "--max-batch-delay",
        "50",
        "--workers",
        "2",
        "--threads",
        "2",
    ]);
    let client = client();
    server.wait_healthy(&client).await;
    let photo = Arc::new(jpeg(320, 240));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, photo, url) = (
            client.clone(),
            photo.clone(),
            format!("{}/predictions/meters", server.inference),
        );
        tasks.spawn(async move {
            let mut replies = Vec::new();
            for _ in 0..4 {
                let r = client.post(&url).body(photo.to_vec()).send().await.unwrap();
                let status = r.status().as_u16();
                replies.push((status, r.bytes().await.unwrap().to_vec()));
            }
            replies
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    assert_eq!(all.len(), 64);
    let statuses: Vec<u16> = all.iter().map(|(s, _)| *s).collect();
    assert!(statuses.iter().all(|&s| s == 200), "statuses: {statuses:?}");
    let want = wms::data::preprocess::resize_nearest_gray(
        &in_process_mask(&server.model, &photo),
        320,
        240,
    );
    for (_, png) in &all {
        let got = image::load_from_memory(png).unwrap().to_luma8();
        assert!(
            got == want,
            "a mask served under load differs from the library's"
        );
    }
    let text = client
        .get(format!("{}/metrics", server.metrics))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (batches, singles) = batch_histogram(&text);
    assert!(batches > 0, "{text}");
    assert!(
        batches > singles,
        "no batch above 1 among {batches} batches:\n{text}"
    );
    assert!(
        text.contains(r#"wms_inference_total{model="meters",version="2.1",status="200"} 64"#),
        "{text}"
    );
    let models: serde_json::Value = client
        .get(format!("{}/models", server.management))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["models"][0]["modelName"], "meters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    // A long batch delay keeps requests in flight when the signal arrives.
    let mut server = Server::start(&["--batch-size", "8", "--max-batch-delay", "1500"]);
    let client = client();
    server.wait_healthy(&client).await;
    let photo = jpeg(320, 240);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let req = client
            .post(format!("{}/predictions/meters", server.inference))
            .body(photo.clone());
        tasks.spawn(async move { req.send().await.map(|r| r.status().as_u16()) });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.sigterm();
    let mut statuses = Vec::new();
    while let Some(r) = tasks.join_next().await {
        statuses.push(r.unwrap().expect("in-flight request completed"));
    }
    assert_eq!(statuses, vec![200; 4]);
    let status = server.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    // Stopped accepting.
    assert!(
        client
            .get(format!("{}/ping", server.inference))
            .send()
            .await
            .is_err()
    );
}

#[test]
fn serve_without_a_model_is_a_usage_error_with_a_hint() {
    let out = bin("wms-serve")
        .env_remove("WMS_SERVE_MODEL")
        .env_remove("WMS_SERVE_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("hint: pass --model"), "{stderr}");
}

/// Chromium for the browser test: `WMS_CHROMIUM` or Debian's `/usr/bin/chromium`.
fn chromium() -> Option<PathBuf> {
    std::env::var_os("WMS_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/bin/chromium")))
        .filter(|p| p.is_file())
}

/// A page session over the Chrome DevTools Protocol.
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use futures_util::{SinkExt, StreamExt};
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(
                msg.to_string(),
            ))
            .await
            .unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no CDP answer to {method} in 30 s"))
                .expect("CDP socket closed")
                .unwrap();
            let Ok(text) = frame.into_text() else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    async fn eval(&mut self, expr: &str) -> serde_json::Value {
        let r = self
            .call(
                "Runtime.evaluate",
                serde_json::json!({"expression": expr, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_page_uploads_a_photo_and_renders_the_overlay_in_chromium() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium not found; hint: apt-get install chromium (make bootstrap)"
        );
        eprintln!("skipped: chromium not installed (apt-get install chromium)");
        return;
    };
    let server = Server::start(&[]);
    let client = client();
    server.wait_healthy(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let photo_path = dir.path().join("meter.jpg");
    fs_err::write(&photo_path, jpeg(640, 480)).unwrap();

    let mut browser = KillOnDrop(
        std::process::Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1200,900",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .arg(format!("{}/", server.inference))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…" on stderr.
    let stderr = browser.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let browser_ws = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("chromium did not print its DevTools address in 30 s");
    let host = browser_ws
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let page_ws = loop {
        let targets: serde_json::Value = client
            .get(format!("http://{host}/json/list"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets.as_array().and_then(|t| {
            t.iter()
                .find(|t| {
                    t["type"] == "page"
                        && t["url"]
                            .as_str()
                            .unwrap_or("")
                            .starts_with(&server.inference)
                })
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
        });
        if let Some(p) = page {
            break p;
        }
        assert!(Instant::now() < deadline, "no page target: {targets}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (ws, _) = tokio_tungstenite::connect_async(page_ws.as_str())
        .await
        .unwrap();
    let mut cdp = Cdp { ws, next_id: 0 };

    let deadline = Instant::now() + Duration::from_secs(30);
    while cdp
        .eval("document.readyState === 'complete' && !!document.getElementById('file')")
        .await
        != serde_json::json!(true)
    {
        assert!(Instant::now() < deadline, "page did not load");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let doc = cdp.call("DOM.getDocument", serde_json::json!({})).await;
    let input = cdp
        .call(
            "DOM.querySelector",
            serde_json::json!({"nodeId": doc["root"]["nodeId"], "selector": "#file"}),
        )
        .await;
    cdp.call(
        "DOM.setFileInputFiles",
        serde_json::json!({"nodeId": input["nodeId"], "files": [photo_path.to_str().unwrap()]}),
    )
    .await;

    let probe = r#"(() => {
        const c = document.querySelector('.card');
        if (!c) return 'none';
        if (c.dataset.state === 'error') return 'error: ' + c.textContent;
        const img = c.querySelector('img.overlay');
        const a = c.querySelector('a.download');
        if (c.dataset.state === 'done' && img && img.complete && img.naturalWidth > 0 && a)
            return `done ${img.naturalWidth}x${img.naturalHeight} ${a.download} ${a.href.slice(0, 22)}`;
        return c.dataset.state;
    })()"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    let outcome = loop {
        let v = cdp.eval(probe).await;
        let s = v.as_str().unwrap_or("").to_string();
        if s.starts_with("done") || s.starts_with("error") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "overlay not rendered in 60 s: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        outcome,
        "done 640x480 meter-mask.png data:image/png;base64,"
    );
    // The mask the page offers is the served one: the photo's size, and pixel for pixel the
    // in-process answer for the same photo (the fixture's mask is mixed, so this can fail).
    let href = cdp
        .eval("document.querySelector('.card a.download').href")
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(
            href.as_str()
                .and_then(|h| h.strip_prefix("data:image/png;base64,"))
                .expect("a PNG data URL"),
        )
        .unwrap();
    let offered = image::load_from_memory(&png).unwrap().to_luma8();
    let expected = in_process_mask(&server.model, &fs_err::read(&photo_path).unwrap());
    let fg = expected.as_raw().iter().filter(|&&v| v == 255).count();
    assert!(fg > 0 && fg < expected.as_raw().len(), "{fg}");
    assert_eq!(offered.dimensions(), (640, 480));
    assert!(
        offered == wms::data::preprocess::resize_nearest_gray(&expected, 640, 480),
        "the page's mask differs from the in-process mask"
    );
    // The overlay is the photo with the mask tinted: some pixels differ from the photo.
    let shot = cdp
        .call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png"}),
        )
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    if let Some(out) = std::env::var_os("WMS_WEB_SCREENSHOT") {
        fs_err::write(out, &png).unwrap();
    }
    assert!(image::load_from_memory(&png).is_ok());
}

/// The TorchServe handler (`torchserve/handler.py`) through the entry point TorchServe calls,
/// `handle(data, context)`, decoding with Pillow as it does under TorchServe: for a PNG photo
/// (lossless, so Pillow and our decoder see the same pixels) its mask at the photo's size equals
/// the library's pixel for pixel, and `Accept: application/json` gets `wms-serve`'s JSON shape.
#[test]
fn torchserve_handler_decodes_with_pillow_and_gives_the_library_mask() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture_model(dir.path());
    let photo_png = encode(&photo(300, 220), ImageFormat::Png);
    let photo_path = dir.path().join("photo.png");
    fs_err::write(&photo_path, &photo_png).unwrap();
    let script = r#"
import base64, json, sys, types
handler_dir, model_path, photo_path, out_png = sys.argv[1:5]
sys.path.insert(0, handler_dir)
import handler
import os
accepts = ["image/png", "application/json"]
ctx = types.SimpleNamespace(
    system_properties={"model_dir": os.path.dirname(model_path)},
    manifest={"model": {"serializedFile": os.path.basename(model_path)}},
    get_request_header=lambda i, name: accepts[i] if name == "Accept" else None,
)
body = open(photo_path, "rb").read()
png, js = handler.handle([{"body": body}, {"data": bytearray(body)}], ctx)
open(out_png, "wb").write(png)
assert base64.b64decode(js["mask_base64"]) == png
print(json.dumps(js["metadata"]))
"#;
    let out_png = dir.path().join("mask.png");
    let torchserve = Path::new(env!("CARGO_MANIFEST_DIR")).join("torchserve");
    let out = std::process::Command::new(crate::util::python())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg("-c")
        .arg(script)
        .args([&torchserve, &model, &photo_path, &out_png])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(meta["model_version"], "2.1");
    let got = image::load_from_memory(&fs_err::read(&out_png).unwrap())
        .unwrap()
        .to_luma8();
    assert_eq!(got.dimensions(), (300, 220));
    let want =
        wms::data::preprocess::resize_nearest_gray(&in_process_mask(&model, &photo_png), 300, 220);
    let differing = got
        .pixels()
        .zip(want.pixels())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differing, 0, "handler and library masks differ");
    let coverage = meta["coverage"].as_f64().unwrap();
    assert!(coverage > 0.05 && coverage < 0.95, "coverage {coverage}");
}

/// A zero-filled 16-bit RGBA PNG: it compresses about 1000:1, so a few hundred KB claim
/// `w*h*8` bytes of pixels (issue 11's attack: 7000x7000 is 381 KB and decodes to 392 MB).
fn png_rgba16_zeros(w: u32, h: u32) -> Vec<u8> {
    use image::ImageEncoder as _;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let pixels = vec![0u8; w as usize * h as usize * 8];
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::NoFilter)
        .write_image(&pixels, w, h, image::ExtendedColorType::Rgba16)
        .unwrap();
    out
}

/// Issue 11's 7000x7000 16-bit RGBA PNG, built once for the tests that send it.
fn issue11_bomb() -> Arc<Vec<u8>> {
    static BOMB: std::sync::OnceLock<Arc<Vec<u8>>> = std::sync::OnceLock::new();
    BOMB.get_or_init(|| {
        let png = png_rgba16_zeros(7000, 7000);
        assert!(
            png.len() < 1_000_000,
            "the bomb must fit max_request_size: {} bytes",
            png.len()
        );
        Arc::new(png)
    })
    .clone()
}

const MB: u64 = 1_000_000;

/// Sends each body at once, with one normal photo among them; returns the attack responses
/// (status, body) and asserts the normal photo was answered.
async fn send_at_once(server: &Server, bodies: Vec<Vec<u8>>) -> Vec<(StatusCode, String)> {
    let client = client();
    let url = format!("{}/predictions/meters", server.inference);
    let send = |body: Vec<u8>| {
        let req = client
            .post(&url)
            .header(header::CONTENT_TYPE, "image/png")
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
            (status, r.text().await.unwrap())
        }
    };
    let normal = client.post(&url).body(jpeg(640, 480)).send();
    let (attacks, normal) = tokio::join!(
        futures_util::future::join_all(bodies.into_iter().map(send)),
        normal
    );
    assert_eq!(normal.unwrap().status(), reqwest::StatusCode::OK);
    attacks
}

/// A one-line JSON error of `status` and TorchServe `type`.
fn assert_json_error(status: StatusCode, body: &str, want: StatusCode, kind: &str) {
    assert_eq!(status, want, "{body}");
    assert!(!body.trim_end().contains('\n'), "one line: {body}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["code"], want.as_u16(), "{v}");
    assert_eq!(v["type"], kind, "{v}");
    assert!(v["message"].as_str().unwrap().contains("hint:"), "{v}");
}

/// Issue 11 (3): six 381 KB PNGs that decode to 392 MB each took the server from 34 MB to
/// 3.0 GB. Now the header's bit depth refuses them before a pixel is allocated, while a normal
/// request is answered, and the server's peak memory stays within 100 MB of its idle size.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue11_huge_16bit_png_is_refused_before_decode() {
    let bomb = issue11_bomb();
    let server = Server::start(&[]);
    server.wait_healthy(&client()).await;
    let idle = server.memory("VmRSS");
    let replies = send_at_once(&server, vec![bomb.to_vec(); 6]).await;
    for (status, body) in replies {
        assert_json_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "UnsupportedBitDepth",
        );
    }
    let peak = server.memory("VmHWM");
    eprintln!(
        "issue11 bit depth: idle RSS {} MB, peak {} MB",
        idle / MB,
        peak / MB
    );
    assert!(
        peak < idle + 100 * MB,
        "peak RSS {} MB, idle {} MB",
        peak / MB,
        idle / MB
    );
}

/// Issue 11 (3): with 16-bit images allowed, the decode memory budget is what bounds memory:
/// an image costing more than the whole budget is refused (413) from its header, and six that
/// fit one at a time are decoded one at a time, so the peak stays near idle + budget instead of
/// six decodes at once (6 x 132 MB), while a normal request is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue11_decode_budget_bounds_memory_of_concurrent_large_images() {
    let bomb = issue11_bomb();
    let budget = 150 * MB;
    let budget_env = budget.to_string();
    let server = Server::start_with_env(
        &[],
        &[
            (env_vars::WMS_SERVE_MAX_IMAGE_BIT_DEPTH, "16"),
            (env_vars::WMS_SERVE_DECODE_MEMORY_BUDGET, &budget_env),
            (env_vars::WMS_SERVE_DECODE_QUEUE_TIMEOUT, "60"),
        ],
    );
    server.wait_healthy(&client()).await;
    let idle = server.memory("VmRSS");
    let replies = send_at_once(&server, vec![bomb.to_vec(); 2]).await;
    for (status, body) in replies {
        assert_json_error(
            status,
            &body,
            StatusCode::PAYLOAD_TOO_LARGE,
            "ImageTooLarge",
        );
    }
    // 4000x3000 RGBA16: 96 MB decoded + 36 MB of RGB = 132 MB each.
    let large = png_rgba16_zeros(4000, 3000);
    let replies = send_at_once(&server, vec![large; 6]).await;
    for (status, body) in &replies {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    let peak = server.memory("VmHWM");
    eprintln!(
        "issue11 budget {} MB: idle RSS {} MB, peak {} MB",
        budget / MB,
        idle / MB,
        peak / MB
    );
    assert!(
        peak < idle + budget + 60 * MB,
        "peak RSS {} MB, idle {} MB, budget {} MB",
        peak / MB,
        idle / MB,
        budget / MB
    );
}

/// One raw connection that sends `head` and then one more header line every 200 ms; returns
/// how long the server kept it open (it never completes the head).
async fn trickle_headers(addr: String, head: &'static str) -> Duration {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    while started.elapsed() < Duration::from_secs(60) {
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if stream.write_all(b"X-Trickle: 1\r\n").await.is_err() {
                    return started.elapsed();
                }
            }
        }
    }
    started.elapsed()
}

/// Issue 11 (4): 20 connections trickling headers stayed open 70 s+. Now each is closed
/// `header_read_timeout` after it is accepted, at most `connection_limit` are open at once
/// (the rest wait to be accepted), a stalled body gets a 408, and a normal request still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue11_slow_headers_are_cut_off_and_connections_are_limited() {
    let limit = 4;
    let server = Server::start_with_env(
        &[],
        &[
            (env_vars::WMS_SERVE_HEADER_READ_TIMEOUT, "1"),
            (env_vars::WMS_SERVE_IDLE_TIMEOUT, "1"),
            (env_vars::WMS_SERVE_BODY_READ_TIMEOUT, "1"),
            (env_vars::WMS_SERVE_CONNECTION_LIMIT, "4"),
        ],
    );
    {
        // A client of its own, so its pooled connection is gone before we count.
        server.wait_healthy(&client()).await;
    }
    let addr = server.inference.trim_start_matches("http://").to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle_sockets = server.open_sockets();

    let mut tricklers = tokio::task::JoinSet::new();
    for _ in 0..20 {
        tricklers.spawn(trickle_headers(
            addr.clone(),
            "POST /predictions/meters HTTP/1.1\r\nHost: wms\r\n",
        ));
    }
    let mut most_open = 0;
    let mut open_times = Vec::new();
    while open_times.len() < 20 {
        most_open = most_open.max(server.open_sockets().saturating_sub(idle_sockets));
        tokio::select! {
            Some(r) = tricklers.join_next() => open_times.push(r.unwrap()),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    let longest = open_times.iter().max().unwrap();
    eprintln!("issue11 trickle: most open {most_open}, longest open {longest:?}");
    assert!(most_open <= limit, "{most_open} connections open at once");
    // 20 connections, 4 at a time, each cut 1-1.25 s after it is accepted.
    assert!(
        *longest < Duration::from_secs(15),
        "a trickling connection stayed open {longest:?}"
    );

    // A complete head with a body that never arrives: 408 after body_read_timeout.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"POST /predictions/meters HTTP/1.1\r\nHost: wms\r\nContent-Length: 1000\r\n\r\n\xFF\xD8")
            .await
            .unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
            .await
            .expect("the server answers a stalled body")
            .unwrap();
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(reply.contains("\"RequestTimeout\""), "{reply}");
    }

    let resp = client()
        .post(format!("{}/predictions/meters", server.inference))
        .body(jpeg(320, 240))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
}
