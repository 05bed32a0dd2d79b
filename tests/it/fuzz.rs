//! Untrusted-input readers against random and mutated bytes (issue 11): the `.pth` reader, the
//! checkpoint reader, the ONNX reader (our protobuf structs and ONNX Runtime's loader), the `.dvc` /
//! `dvc.lock` / `.dir` parsers and the serving image path. Every input is made here from a seeded
//! generator, so a failure reproduces; each reader must return (an error, almost always) without
//! a panic and within its time budget. Mutations are the ones hostile files use: bits flipped,
//! bytes replaced, the file cut short, a length or count field set huge, bytes inserted.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use wms::checkpoint::{Tensor, TensorData};
use wms::data::preprocess::PreprocessSpec;
use wms::model::ModelSpec;
use wms::onnx::fixtures::{SplitMix64, random_checkpoint};

/// Runs `f` on each case and fails if the whole batch takes longer than `budget` (about three
/// times what it takes on an idle 2-core machine: the bound is there to catch a hang or a
/// blow-up, not to measure speed).
fn within(name: &str, budget: Duration, cases: usize, mut f: impl FnMut(usize)) {
    let start = Instant::now();
    for case in 0..cases {
        f(case);
    }
    let took = start.elapsed();
    eprintln!("{name}: {cases} cases in {took:.2?}");
    assert!(
        took < budget,
        "{name}: {cases} cases took {took:?} (budget {budget:?})"
    );
}

fn below(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

fn random_bytes(rng: &mut SplitMix64, max_len: usize) -> Vec<u8> {
    (0..below(rng, max_len + 1))
        .map(|_| rng.next_u64() as u8)
        .collect()
}

/// `valid` with one to three of: a bit flipped, a byte replaced, the tail cut, a 2/4/8-byte
/// window set to a huge little- or big-endian value, random bytes inserted.
fn mutate(rng: &mut SplitMix64, valid: &[u8]) -> Vec<u8> {
    let mut b = valid.to_vec();
    for _ in 0..1 + below(rng, 3) {
        if b.is_empty() {
            break;
        }
        let at = below(rng, b.len());
        match below(rng, 5) {
            0 => b[at] ^= 1 << below(rng, 8),
            1 => b[at] = rng.next_u64() as u8,
            2 => b.truncate(at),
            3 => set_huge(rng, &mut b, at),
            _ => {
                let insert = random_bytes(rng, 16);
                b.splice(at..at, insert);
            }
        }
    }
    b
}

/// Sets the 2, 4 or 8 bytes at `at` to a huge length or count (all ones, or i32/i64 max).
fn set_huge(rng: &mut SplitMix64, b: &mut [u8], at: usize) {
    let width = [2, 4, 8][below(rng, 3)].min(b.len() - at);
    let value: [u8; 8] = match below(rng, 3) {
        0 => [0xff; 8],
        1 => i32::MAX.to_le_bytes().repeat(2).try_into().unwrap(),
        _ => i64::MAX.to_le_bytes(),
    };
    b[at..at + width].copy_from_slice(&value[..width]);
}

/// Sets a size, count, length or offset field of a zip record (local header, central directory,
/// end of central directory) to a huge value: the fields a hostile archive lies in.
fn huge_zip_field(rng: &mut SplitMix64, valid: &[u8]) -> Vec<u8> {
    let mut b = valid.to_vec();
    // (signature, offsets of its 4-byte and 2-byte fields)
    let records: [(&[u8], &[usize], &[usize]); 3] = [
        (b"PK\x03\x04", &[14, 18, 22], &[26, 28]),
        (b"PK\x01\x02", &[16, 20, 24, 42], &[28, 30, 32]),
        (b"PK\x05\x06", &[12, 16], &[8, 10]),
    ];
    let (sig, wide, narrow) = records[below(rng, records.len())];
    let starts: Vec<usize> = b
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == sig)
        .map(|(i, _)| i)
        .collect();
    if starts.is_empty() {
        return b;
    }
    let start = starts[below(rng, starts.len())];
    let (at, width) = if below(rng, 2) == 0 {
        (start + wide[below(rng, wide.len())], 4)
    } else {
        (start + narrow[below(rng, narrow.len())], 2)
    };
    if at + width <= b.len() {
        b[at..at + width].fill(0xff);
    }
    b
}

fn sample_state_dict() -> Vec<(String, Tensor)> {
    vec![
        (
            "enc1.0.weight".to_string(),
            Tensor::f32(vec![2, 1, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5]),
        ),
        (
            "enc1.1.num_batches_tracked".to_string(),
            Tensor {
                shape: vec![],
                data: TensorData::I64(vec![7]),
            },
        ),
    ]
}

/// A torch.save-style zip of the given `archive/data.pkl` (and nothing else but `version`).
fn pth_with_pickle(path: &Path, pickle: &[u8]) {
    let mut zip = zip::ZipWriter::new(fs_err::File::create(path).unwrap());
    let opts = zip::write::FileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default());
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(pickle).unwrap();
    zip.start_file("archive/byteorder", opts).unwrap();
    zip.write_all(b"little").unwrap();
    zip.start_file("archive/version", opts).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}

/// The issue 11 pickle: `{"w0": l0, …, "wN": lN}` where `l0 = []` and `l(i+1) = [li, li]`, each
/// list memoised and fetched twice (`EMPTY_LIST BINPUT 0`, then `MARK BINGET i BINGET i LIST
/// BINPUT i+1`). A reader that copies memo values builds 2^N lists from it.
pub fn memo_bomb_pickle(levels: u8) -> Vec<u8> {
    let mut p = b"\x80\x02}(".to_vec();
    for i in 0..=levels {
        let key = format!("w{i}");
        p.push(0x8c); // SHORT_BINUNICODE
        p.push(key.len() as u8);
        p.extend_from_slice(key.as_bytes());
        match i {
            0 => p.extend_from_slice(b"]q\x00"),
            _ => p.extend_from_slice(&[b'(', b'h', i - 1, b'h', i - 1, b'l', b'q', i]),
        }
    }
    p.extend_from_slice(b"u.");
    p
}

/// Writes the issue 11 memo bomb as `.pth` at `path` (about 600 bytes, like the reported one).
pub fn write_memo_bomb(path: &Path) {
    pth_with_pickle(path, &memo_bomb_pickle(30));
}

/// Set for [`memo_bomb_child`]: the `.pth` it reads.
const MEMO_BOMB_ENV: &str = "WMS_TEST_MEMO_BOMB_PTH";

fn vm_hwm_kib() -> u64 {
    let status = fs_err::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The measured half of [`issue11_pickle_memo_bomb_is_refused`], in its own process so the
/// peak RSS is the reader's alone.
#[test]
#[ignore = "run by issue11_pickle_memo_bomb_is_refused in a child process"]
fn memo_bomb_child() {
    let path = std::env::var_os(MEMO_BOMB_ENV).expect("run by the parent test");
    let before = vm_hwm_kib();
    let start = Instant::now();
    let err = wms::checkpoint::pth::read_state_dict(Path::new(&path)).unwrap_err();
    let took = start.elapsed();
    println!("MEMO_BOMB_ERROR={err}");
    println!("MEMO_BOMB_MS={}", took.as_millis());
    println!("MEMO_BOMB_HWM_GROWTH_KIB={}", vm_hwm_kib() - before);
}

#[test]
fn issue11_pickle_memo_bomb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.pth");
    write_memo_bomb(&path);
    let size = fs_err::metadata(&path).unwrap().len();
    assert!(size < 1024, "the bomb is {size} bytes");

    // This test binary itself, running only the child test.
    let stdout = crate::util::TestCommand::external(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fuzz::memo_bomb_child",
            "--ignored",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(MEMO_BOMB_ENV, &path)
        .ok()
        .stdout();
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(key).map(|(_, value)| value))
            .unwrap_or_else(|| panic!("no {key} in {stdout}"))
            .to_string()
    };
    let err = field("MEMO_BOMB_ERROR=");
    assert!(err.contains(&*path.to_string_lossy()), "{err}");
    assert!(
        err.contains("entry \"w0\" is a list, not a tensor"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    let ms: u64 = field("MEMO_BOMB_MS=").parse().unwrap();
    assert!(ms < 1000, "reading the bomb took {ms} ms");
    // The copying reader reached 3.7 GB; sharing keeps the whole read under a few MiB.
    let growth: u64 = field("MEMO_BOMB_HWM_GROWTH_KIB=").parse().unwrap();
    assert!(growth < 32 * 1024, "peak RSS grew by {growth} KiB");
}

#[test]
fn pth_reader_survives_random_and_mutated_archives() {
    let dir = tempfile::tempdir().unwrap();
    let valid_path = dir.path().join("valid.pth");
    let sd = sample_state_dict();
    let refs: Vec<(String, &Tensor)> = sd.iter().map(|(n, t)| (n.clone(), t)).collect();
    wms::checkpoint::pth::write_state_dict(&valid_path, &refs).unwrap();
    assert_eq!(
        wms::checkpoint::pth::read_state_dict(&valid_path).unwrap(),
        sd
    );
    let valid = fs_err::read(&valid_path).unwrap();
    let bomb_path = dir.path().join("bomb.pth");
    write_memo_bomb(&bomb_path);
    let bomb = fs_err::read(&bomb_path).unwrap();

    let path = dir.path().join("case.pth");
    let mut rng = SplitMix64::new(111);
    let mut ok = 0;
    within("pth", Duration::from_secs(15), 2000, |case| {
        let bytes = match case % 6 {
            0 | 1 => mutate(&mut rng, &valid),
            2 => huge_zip_field(&mut rng, &valid),
            3 => mutate(&mut rng, &bomb),
            4 => [&b"PK\x03\x04"[..], &random_bytes(&mut rng, 256)].concat(),
            _ => random_bytes(&mut rng, 512),
        };
        fs_err::write(&path, &bytes).unwrap();
        match wms::checkpoint::pth::read_state_dict(&path) {
            Ok(_) => ok += 1,
            Err(e) => {
                let e = e.to_string();
                assert!(!e.contains('\n'), "case {case}: {e}");
            }
        }
    });
    eprintln!("pth: {ok} mutated archives still read");
}

#[test]
fn checkpoint_reader_survives_mutated_files() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ModelSpec {
        base_filters: 2,
        depth: 1,
        ..ModelSpec::default()
    };
    let path = dir.path().join("case.safetensors");
    random_checkpoint(spec, 3).write(&path).unwrap();
    let valid = fs_err::read(&path).unwrap();
    // Mutate the JSON header (where the sidecar and every tensor's shape and offsets are) more
    // often than the weights.
    let header_len = 8 + u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let mut rng = SplitMix64::new(112);
    within("checkpoint", Duration::from_secs(10), 600, |case| {
        let bytes = if case % 4 == 3 {
            mutate(&mut rng, &valid)
        } else {
            let mut head = mutate(&mut rng, &valid[..header_len]);
            head.extend_from_slice(&valid[header_len..]);
            head
        };
        fs_err::write(&path, &bytes).unwrap();
        let _ = wms::checkpoint::Checkpoint::read(&path);
    });
    // The sidecar's spec sizes every shape: out-of-range values are refused, not overflowed.
    let text = std::str::from_utf8(&valid[8..header_len]).unwrap();
    for (from, to) in [
        ("\\\"depth\\\":1", "\\\"depth\\\":70"),
        (
            "\\\"base_filters\\\":2",
            "\\\"base_filters\\\":9223372036854775807",
        ),
        ("\\\"in_channels\\\":3", "\\\"in_channels\\\":-3"),
    ] {
        assert!(text.contains(from), "{from} not in {text}");
        let head = text.replacen(from, to, 1);
        let mut bytes = (head.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(head.as_bytes());
        bytes.extend_from_slice(&valid[header_len..]);
        fs_err::write(&path, &bytes).unwrap();
        let err = wms::checkpoint::Checkpoint::read(&path).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{to}: {err}");
    }
}

#[test]
fn onnx_reader_survives_random_and_mutated_models() {
    use prost::Message as _;
    use wms::onnx::proto::ModelProto;

    let spec = ModelSpec {
        base_filters: 2,
        depth: 1,
        ..ModelSpec::default()
    };
    let opts = wms::onnx::ExportOptions {
        version: "1".into(),
    };
    let valid = wms::onnx::export(&random_checkpoint(spec, 5), &opts).unwrap();
    let mut rng = SplitMix64::new(113);
    within("onnx protobuf", Duration::from_secs(4), 3000, |case| {
        let bytes = match case % 3 {
            0 | 1 => mutate(&mut rng, &valid),
            _ => random_bytes(&mut rng, 512),
        };
        if let Ok(model) = ModelProto::decode(bytes.as_slice()) {
            // What a reader computes from a decoded model: element counts of every initializer.
            for t in model.graph.iter().flat_map(|g| &g.initializer) {
                let _ = t
                    .dims
                    .iter()
                    .try_fold(1i64, |n, &d| if d < 0 { None } else { n.checked_mul(d) });
            }
        }
    });

    // ONNX Runtime's own loader (what `wms-serve` and `export-onnx --check` use), on fewer cases:
    // each is a session build.
    if let Err(e) = wms::ort_runtime::init() {
        eprintln!("skipping ONNX Runtime cases: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.onnx");
    within("onnx runtime", Duration::from_secs(6), 60, |case| {
        let bytes = match case % 4 {
            0 => random_bytes(&mut rng, 256),
            _ => mutate(&mut rng, &valid),
        };
        fs_err::write(&path, &bytes).unwrap();
        let _ = wms::onnx::check::OrtModel::load(&path);
    });
}

const DVC_FILE: &str = "outs:
- md5: 3863d0e317dd7b22ecd4a2d26d0f3ba7.dir
  size: 1234567
  nfiles: 3
  hash: md5
  path: images
";

const DVC_LOCK: &str = "schema: '2.0'
stages:
  train:
    cmd: wms-train train
    outs:
    - path: models/best.safetensors
      md5: 9e107d9d372bb6826bd81d3542a419d6
      size: 8041
      hash: md5
";

#[test]
fn dvc_parsers_survive_random_and_mutated_input() {
    use wms::dvc::dvcfile::{DirEntry, parse_dir_manifest, parse_outs, render_dir_manifest};

    assert_eq!(parse_outs("images.dvc", DVC_FILE).unwrap().len(), 1);
    assert_eq!(parse_outs("dvc.lock", DVC_LOCK).unwrap().len(), 1);
    let dir = render_dir_manifest(
        &(0..3)
            .map(|i| DirEntry {
                md5: format!("{i:032x}"),
                relpath: format!("img/{i}.jpg"),
            })
            .collect::<Vec<_>>(),
    );
    assert_eq!(parse_dir_manifest(&dir).unwrap().len(), 3);
    let mut rng = SplitMix64::new(114);
    within("dvc", Duration::from_secs(4), 3000, |case| {
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        match case % 5 {
            0 => drop(parse_outs(
                "images.dvc",
                &text(mutate(&mut rng, DVC_FILE.as_bytes())),
            )),
            1 => drop(parse_outs(
                "dvc.lock",
                &text(mutate(&mut rng, DVC_LOCK.as_bytes())),
            )),
            2 => drop(parse_outs("x.dvc", &text(random_bytes(&mut rng, 256)))),
            3 => drop(parse_dir_manifest(&mutate(&mut rng, &dir))),
            _ => drop(parse_dir_manifest(&random_bytes(&mut rng, 256))),
        }
    });
    // Deep nesting, huge numbers and alias expansion, written out.
    let timed = |name: &str, f: &dyn Fn() -> bool| {
        let start = Instant::now();
        let refused = f();
        let took = start.elapsed();
        eprintln!("dvc {name}: refused={refused} in {took:.2?}");
        assert!(refused, "{name} was accepted");
        assert!(took < Duration::from_secs(2), "{name} took {took:?}");
    };
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    timed("deep .dir JSON", &|| {
        parse_dir_manifest(deep_json.as_bytes()).is_err()
    });
    // Deeper YAML: the test below.
    let deep_yaml = format!("outs: {}{}", "[".repeat(2_000), "]".repeat(2_000));
    timed("deep YAML", &|| parse_outs("x.dvc", &deep_yaml).is_err());
    let huge = DVC_FILE.replace("1234567", "99999999999999999999999999");
    timed("huge size", &|| parse_outs("x.dvc", &huge).is_err());
    let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12u8 {
        let (prev, name) = ((b'a' + i) as char, (b'b' + i) as char);
        let refs = vec![format!("*{prev}"); 10].join(", ");
        laughs.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    laughs.push_str("outs: *m\n");
    timed("billion laughs", &|| parse_outs("x.dvc", &laughs).is_err());
}

/// Found by the cases above: serde_yaml took time superquadratic in the nesting depth of flow
/// sequences before refusing them (41 s at depth 100k), so a 200 KB `.dvc` file held `data pull`
/// or `detect-changes` for most of a minute, until `dvcfile` bounded the nesting first.
#[test]
fn dvc_deeply_nested_yaml_is_refused_quickly() {
    for depth in [5_000, 10_000, 20_000, 100_000] {
        let text = format!("outs: {}{}", "[".repeat(depth), "]".repeat(depth));
        let start = Instant::now();
        let refused = wms::dvc::dvcfile::parse_outs("x.dvc", &text).is_err();
        let took = start.elapsed();
        eprintln!("depth {depth}: refused={refused} in {took:.2?}");
        assert!(
            refused && took < Duration::from_secs(2),
            "depth {depth}: {took:?}"
        );
    }
}

#[test]
fn serving_image_path_survives_random_and_mutated_images() {
    use wms::serve::predict::{ImageLimits, inspect, prepare};

    let img = image::RgbImage::from_fn(24, 16, |x, y| {
        image::Rgb([(x * 10) as u8, (y * 15) as u8, 99])
    });
    let encode = |format| {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    };
    let png = encode(image::ImageFormat::Png);
    let jpeg = encode(image::ImageFormat::Jpeg);
    let spec = PreprocessSpec {
        input_width: 32,
        input_height: 32,
        ..PreprocessSpec::default()
    };
    let limits = ImageLimits {
        max_pixels: 4_000_000,
        max_bit_depth: 16,
    };
    let run = |bytes: &[u8]| inspect(bytes, &limits, &spec).and_then(|a| prepare(bytes, &a, &spec));
    assert!(run(&png).is_ok() && run(&jpeg).is_ok());
    let mut rng = SplitMix64::new(115);
    within("image", Duration::from_secs(8), 2000, |case| {
        let bytes = match case % 5 {
            0 | 1 => mutate(&mut rng, &png),
            2 | 3 => mutate(&mut rng, &jpeg),
            _ => random_bytes(&mut rng, 256),
        };
        let _ = run(&bytes);
    });
}
