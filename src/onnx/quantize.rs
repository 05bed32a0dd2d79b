//! Static int8 quantization of an exported fp32 model, written as a QDQ graph: every activation
//! an int8 operator reads or writes goes through `QuantizeLinear → DequantizeLinear` (uint8,
//! per tensor; [`quantized_tensors`] says which: a layer [`Plan`] keeps fp32, and what only fp32
//! layers touch, stays float without a round trip), and every convolution that [`Plan`]
//! quantizes reads its weights through a
//! per-output-channel `DequantizeLinear` of symmetric int8 values and its bias through an int32
//! one. The graph still *means* fp32 arithmetic on rounded values, so any ONNX runtime runs it;
//! ONNX Runtime's QDQ transformers fuse `DQ → Conv → Relu → Q` into `QLinearConv` (the Relu
//! disappears because the zero point of a Relu output is 0), `DQ → MaxPool/Resize → Q` with equal
//! parameters into the uint8 operator, and `DQ… → Concat → Q` into `QLinearConcat`, which run on
//! the CPU's int8 dot-product instructions (VNNI).
//!
//! Parameters:
//! - weights: per output channel `c`, `s_w[c] = max|W[c]| / 127`, `q = round(W / s_w)` in
//!   [−127, 127], zero point 0 (symmetric; −128 is never used, so no VNNI saturation issue);
//! - bias: `s_b[c] = s_x · s_w[c]` (what the int32 accumulator of `QLinearConv` carries), zero 0;
//! - activations: uint8 from the calibrated [min, max] range widened to contain 0 (min-max
//!   calibration, see [`super::calibrate`]): `s = (max − min) / 255`, `zp = round(−min / s)`.
//!   The graph input is fixed at `s = 1/255, zp = 0`: preprocessing emits exactly `k/255`
//!   (DESIGN §5), so quantizing it loses nothing. MaxPool and Resize outputs inherit their input's
//!   parameters (a max, or a convex combination, stays inside the input's range), which is what
//!   lets ONNX Runtime drop their Q/DQ pair and run them on uint8.
//!
//! Pure data transformation: no I/O and no ONNX Runtime (calibration and the accuracy guard live
//! in [`super::calibrate`]).

use std::collections::{BTreeMap, BTreeSet};

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, TypeProto, ValueInfoProto,
    attribute_type, data_type, type_proto,
};

/// Observed range of one activation tensor over the calibration images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f32,
    pub max: f32,
}

impl Range {
    /// The empty range, ready to [`Range::observe`] values.
    pub const EMPTY: Range = Range {
        min: f32::INFINITY,
        max: f32::NEG_INFINITY,
    };

    pub fn observe(&mut self, values: &[f32]) {
        let (mut lo, mut hi) = (self.min, self.max);
        for &v in values {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        self.min = lo;
        self.max = hi;
    }

    pub fn merge(&mut self, other: Range) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// Which convolutions stay fp32 (by node name, e.g. `logits` for the final 1×1 convolution,
/// `enc1/conv0` for the first one). Everything else is int8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub fp32_convs: BTreeSet<String>,
}

impl Default for Plan {
    /// Every convolution int8, the final 1×1 included: kept fp32 it cost 10 % of an int8 forward
    /// pass (a float copy of its 16-channel input and two layout changes for a layer with 0.01 %
    /// of the FLOPs). Its output, the logit the mask thresholds at 0, is then rounded to steps of
    /// 1/16 within ±[`LOGIT_LIMIT`]. Measured choices: docs/PERFORMANCE.md.
    fn default() -> Self {
        Plan {
            fp32_convs: BTreeSet::new(),
        }
    }
}

/// An int8 graph output (the logits) is clipped to ±this before its range is split into 255
/// steps: the mask only needs the sign, and sigmoid(8) is 0.9997, so a wider range would only
/// coarsen the steps around 0.
pub const LOGIT_LIMIT: f32 = 8.0;

/// int8 convolutions read a multiple of this many input channels: ONNX Runtime's int8
/// convolution kernel ran the first layer (3 channels, the RGB photo) at 5.2 ms with 3 and
/// 3.2 ms with 4 at 512×512 (docs/PERFORMANCE.md). The extra channels are zero-padded on the
/// uint8 input and meet zero weights, so the result is the same.
pub const CHANNEL_MULTIPLE: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(
        "activation {tensor} has no calibrated range; hint: this is a bug in the exporter, please report it"
    )]
    NoRange { tensor: String },
    #[error(
        "activation {tensor} has a non-finite calibrated range [{min}, {max}]; hint: the fp32 model produces NaN or infinity on the calibration images — check the checkpoint"
    )]
    BadRange { tensor: String, min: f32, max: f32 },
    #[error(
        "initializer {name} is missing or not fp32; hint: quantize a model written by `wms export-onnx`"
    )]
    Initializer { name: String },
    #[error(
        "--keep-fp32 names {name}, which is not a convolution of this model; hint: use node names of its convolutions: {known}"
    )]
    UnknownConv { name: String, known: String },
}

/// Names of the graph's outputs.
fn output_names(g: &GraphProto) -> BTreeSet<&str> {
    g.output.iter().filter_map(|o| o.name.as_deref()).collect()
}

/// Tensors whose range calibration must observe: the outputs of `Relu` and `Concat` nodes and
/// the graph outputs. (The graph input has fixed parameters; MaxPool and Resize inherit theirs.)
pub fn observed_tensors(g: &GraphProto) -> Vec<String> {
    let mut names: Vec<String> = g
        .node
        .iter()
        .filter(|n| matches!(n.op_type.as_deref(), Some("Relu" | "Concat")))
        .flat_map(|n| n.output.iter().cloned())
        .collect();
    names.extend(g.output.iter().filter_map(|o| o.name.clone()));
    names
}

/// The fp32 model with every [`observed_tensors`] entry added as a graph output (typed f32,
/// shape left to inference), for the calibration runs.
pub fn calibration_model(m: &ModelProto) -> ModelProto {
    let mut m = m.clone();
    if let Some(g) = m.graph.as_mut() {
        let outputs: BTreeSet<String> = output_names(g).into_iter().map(String::from).collect();
        for name in observed_tensors(g) {
            if outputs.contains(&name) {
                continue;
            }
            g.output.push(ValueInfoProto {
                name: Some(name),
                r#type: Some(TypeProto {
                    value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                        elem_type: Some(data_type::FLOAT),
                        shape: None,
                    })),
                    denotation: None,
                }),
                doc_string: None,
            });
        }
    }
    m
}

/// uint8 parameters of one activation tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationParams {
    pub scale: f32,
    pub zero_point: u8,
}

/// Smallest activation scale: a tensor that was constant 0 in calibration still gets a valid
/// (positive) scale; anything above ~255 × this saturates, which is what min-max means.
const MIN_SCALE: f32 = 1e-6;

impl ActivationParams {
    /// Asymmetric uint8 over `r` widened to contain 0.
    pub fn from_range(r: Range) -> Self {
        let (lo, hi) = (r.min.min(0.0), r.max.max(0.0));
        let scale = ((hi - lo) / 255.0).max(MIN_SCALE);
        let zero_point = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        ActivationParams { scale, zero_point }
    }

    /// Exactly `k/255` for `k` in 0..=255: what preprocessing emits.
    pub const INPUT: ActivationParams = ActivationParams {
        scale: 1.0 / 255.0,
        zero_point: 0,
    };
}

/// Per-output-channel symmetric int8 weights: (values, scales).
pub fn quantize_weights(w: &[f32], cout: usize) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / cout.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(cout);
    for ch in w.chunks(per.max(1)) {
        let max = ch.iter().fold(0f32, |m, v| m.max(v.abs()));
        // An all-zero channel: any positive scale represents it exactly.
        let s = if max > 0.0 { max / 127.0 } else { 1.0 };
        scales.push(s);
        q.extend(
            ch.iter()
                .map(|&v| (v / s).round().clamp(-127.0, 127.0) as i8),
        );
    }
    (q, scales)
}

/// int32 bias for accumulator scale `s_x · s_w[c]` (saturating; with weight scales ≥ max|W|/127
/// and activation scales ≥ [`MIN_SCALE`] a real bias is orders of magnitude inside i32).
pub fn quantize_bias(b: &[f32], x_scale: f32, w_scales: &[f32]) -> (Vec<i32>, Vec<f32>) {
    let scales: Vec<f32> = w_scales.iter().map(|s| s * x_scale).collect();
    let q = b
        .iter()
        .zip(&scales)
        .map(|(&v, &s)| {
            (f64::from(v) / f64::from(s))
                .round()
                .clamp(i32::MIN as f64, i32::MAX as f64) as i32
        })
        .collect();
    (q, scales)
}

/// The QDQ model: `m` (as [`super::export`] writes it) with activations, weights and biases
/// quantized as the module header describes, `ranges` from calibration (keyed by
/// [`observed_tensors`]), and the convolutions in `plan.fp32_convs` left fp32.
pub fn quantize(
    m: &ModelProto,
    ranges: &BTreeMap<String, Range>,
    plan: &Plan,
) -> Result<ModelProto, QuantizeError> {
    let mut out = m.clone();
    let Some(g) = out.graph.as_mut() else {
        return Ok(out);
    };
    let input_name = super::INPUT_NAME;
    let convs: BTreeSet<&str> = g
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("Conv"))
        .filter_map(|n| n.name.as_deref())
        .collect();
    if let Some(unknown) = plan.fp32_convs.iter().find(|c| !convs.contains(c.as_str())) {
        return Err(QuantizeError::UnknownConv {
            name: unknown.clone(),
            known: convs
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let quantized = quantized_tensors(g, plan);
    // Parameters of every quantized activation, in topological order.
    let mut params: BTreeMap<String, ActivationParams> = BTreeMap::new();
    if quantized.contains(input_name) {
        params.insert(input_name.to_string(), ActivationParams::INPUT);
    }
    // A tensor's calibrated range, which must exist and be finite.
    let calibrated = |tensor: &String| -> Result<Range, QuantizeError> {
        let r = *ranges.get(tensor).ok_or_else(|| QuantizeError::NoRange {
            tensor: tensor.clone(),
        })?;
        if !r.min.is_finite() || !r.max.is_finite() {
            return Err(QuantizeError::BadRange {
                tensor: tensor.clone(),
                min: r.min,
                max: r.max,
            });
        }
        Ok(r)
    };
    for n in &g.node {
        let Some(outp) = n.output.first() else {
            continue;
        };
        if !quantized.contains(outp.as_str()) {
            continue;
        }
        match n.op_type.as_deref() {
            Some("Relu" | "Concat") => {
                let r = calibrated(outp)?;
                params.insert(outp.clone(), ActivationParams::from_range(r));
            }
            Some("MaxPool" | "Resize") => {
                if let Some(p) = n.input.first().and_then(|i| params.get(i)).copied() {
                    params.insert(outp.clone(), p);
                }
            }
            Some("Conv") => {
                let r = calibrated(outp)?;
                let clipped = Range {
                    min: r.min.clamp(-LOGIT_LIMIT, 0.0),
                    max: r.max.clamp(0.0, LOGIT_LIMIT),
                };
                params.insert(outp.clone(), ActivationParams::from_range(clipped));
            }
            _ => {}
        }
    }
    let graph_outputs: BTreeSet<String> = output_names(g).into_iter().map(String::from).collect();

    let mut inits: BTreeMap<String, TensorProto> = g
        .initializer
        .drain(..)
        .map(|t| (t.name.clone().unwrap_or_default(), t))
        .collect();
    let mut new_inits: Vec<TensorProto> = Vec::new();
    let mut nodes: Vec<NodeProto> = Vec::new();
    let add_act_params = |name: &str, p: ActivationParams, new_inits: &mut Vec<TensorProto>| {
        new_inits.push(scalar_f32(&format!("{name}/scale"), p.scale));
        new_inits.push(tensor_u8(
            &format!("{name}/zero_point"),
            &[],
            &[p.zero_point],
        ));
    };
    if let Some(p) = params.get(input_name).copied() {
        add_act_params(input_name, p, &mut new_inits);
        nodes.push(quantize_node(input_name));
    }
    for n in std::mem::take(&mut g.node) {
        let mut n = n;
        let node_name = n.name.clone().unwrap_or_default();
        let x_tensor = n.input.first().cloned().unwrap_or_default();
        let int8_conv = n.op_type.as_deref() == Some("Conv")
            && !plan.fp32_convs.contains(&node_name)
            && params.contains_key(&x_tensor);
        // An int8 convolution's weights, with input channels padded to CHANNEL_MULTIPLE.
        let weights = if int8_conv {
            let wname = n.input[1].clone();
            let wt = inits
                .remove(&wname)
                .ok_or_else(|| QuantizeError::Initializer {
                    name: wname.clone(),
                })?;
            let w = f32_values(&wt).ok_or_else(|| QuantizeError::Initializer {
                name: wname.clone(),
            })?;
            Some((wname, pad_input_channels(&w, &wt.dims)))
        } else {
            None
        };
        let channel_pad = weights.as_ref().map_or(0, |(_, (_, _, pad))| *pad);
        // Each consumer reads a quantized tensor through its own DequantizeLinear (ONNX
        // Runtime groups a DQ with exactly one consumer node).
        for (k, inp) in n.input.iter_mut().enumerate() {
            if params.contains_key(inp.as_str()) {
                let dq = format!("{inp}/dq/{node_name}/{k}");
                let mut q = format!("{inp}/q");
                if k == 0 && channel_pad > 0 {
                    let padded = format!("{q}/pad/{node_name}");
                    let pads = format!("{padded}/pads");
                    // [N, C, H, W] begins, then ends: `channel_pad` more channels at the end.
                    new_inits.push(tensor_i64(&pads, &[8], &[0, 0, 0, 0, 0, channel_pad, 0, 0]));
                    nodes.push(NodeProto {
                        input: vec![q.clone(), pads],
                        output: vec![padded.clone()],
                        name: Some(padded.clone()),
                        op_type: Some("Pad".into()),
                        ..Default::default()
                    });
                    q = padded;
                }
                nodes.push(dequantize_node(
                    &dq,
                    &q,
                    &format!("{inp}/scale"),
                    &format!("{inp}/zero_point"),
                    None,
                ));
                *inp = dq;
            }
        }
        if let Some((wname, (w, dims, _))) = weights
            && let Some(xp) = params.get(&x_tensor).copied()
        {
            let bname = n.input.get(2).cloned();
            let cout = *dims.first().unwrap_or(&1) as usize;
            let (wq, ws) = quantize_weights(&w, cout);
            new_inits.push(tensor_i8(&format!("{wname}/q"), &dims, &wq));
            new_inits.push(tensor_f32(&format!("{wname}/scale"), &[cout as i64], &ws));
            new_inits.push(tensor_i8(
                &format!("{wname}/zero_point"),
                &[cout as i64],
                &vec![0; cout],
            ));
            let wdq = format!("{wname}/dq");
            nodes.push(dequantize_node(
                &wdq,
                &format!("{wname}/q"),
                &format!("{wname}/scale"),
                &format!("{wname}/zero_point"),
                Some(0),
            ));
            n.input[1] = wdq;
            if let Some(bname) = bname {
                let bt = inits
                    .remove(&bname)
                    .ok_or_else(|| QuantizeError::Initializer {
                        name: bname.clone(),
                    })?;
                let b = f32_values(&bt).ok_or_else(|| QuantizeError::Initializer {
                    name: bname.clone(),
                })?;
                let (bq, bs) = quantize_bias(&b, xp.scale, &ws);
                new_inits.push(tensor_i32(&format!("{bname}/q"), &[cout as i64], &bq));
                new_inits.push(tensor_f32(&format!("{bname}/scale"), &[cout as i64], &bs));
                new_inits.push(tensor_i32(
                    &format!("{bname}/zero_point"),
                    &[cout as i64],
                    &vec![0; cout],
                ));
                let bdq = format!("{bname}/dq");
                nodes.push(dequantize_node(
                    &bdq,
                    &format!("{bname}/q"),
                    &format!("{bname}/scale"),
                    &format!("{bname}/zero_point"),
                    Some(0),
                ));
                n.input[2] = bdq;
            }
        }
        let outp = n.output.first().cloned();
        match outp {
            Some(o) if params.contains_key(&o) && graph_outputs.contains(&o) => {
                // The graph output stays float under its name: the node writes `{o}/f`,
                // which goes through QuantizeLinear → DequantizeLinear back to `o`.
                let float = format!("{o}/f");
                n.output[0] = float.clone();
                nodes.push(n);
                add_act_params(&o, params[&o], &mut new_inits);
                let mut q = quantize_node(&o);
                q.input[0] = float;
                nodes.push(q);
                let mut dq = dequantize_node(
                    &o,
                    &format!("{o}/q"),
                    &format!("{o}/scale"),
                    &format!("{o}/zero_point"),
                    None,
                );
                // Node names are unique; the convolution keeps `o` as its name.
                dq.name = Some(format!("{o}/dequantize"));
                nodes.push(dq);
            }
            Some(o) if params.contains_key(&o) => {
                nodes.push(n);
                add_act_params(&o, params[&o], &mut new_inits);
                nodes.push(quantize_node(&o));
            }
            _ => nodes.push(n),
        }
    }
    g.node = nodes;
    // Unquantized initializers keep their order (fp32 convs, Resize scales), then the new ones.
    let mut kept: Vec<TensorProto> = m
        .graph
        .as_ref()
        .map(|og| {
            og.initializer
                .iter()
                .filter_map(|t| t.name.as_ref().and_then(|n| inits.remove(n)))
                .collect()
        })
        .unwrap_or_default();
    kept.extend(new_inits);
    g.initializer = kept;
    g.doc_string = Some(format!(
        "{} Quantized by wms: QDQ, uint8 activations (per tensor, min-max calibrated; logits clipped to ±{LOGIT_LIMIT}), int8 weights (per output channel, symmetric); fp32 convolutions: {}.",
        g.doc_string.as_deref().unwrap_or_default(),
        if plan.fp32_convs.is_empty() {
            "none".to_string()
        } else {
            plan.fp32_convs
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    Ok(out)
}

/// The activations that go through `QuantizeLinear → DequantizeLinear`: only those an int8
/// operator reads or writes, so a layer kept fp32 (and the tensors only fp32 layers touch) runs
/// without a float → uint8 → float round trip.
/// - the output of the `Relu` right after an int8 convolution (ONNX Runtime fuses `DQ → Conv →
///   Relu → Q` only with the `Q`);
/// - any tensor an int8 convolution reads as its input, and a graph output it writes;
/// - the input of a `MaxPool` or `Resize`, and every input of a `Concat`, whose output is
///   quantized (they run on uint8, or fuse into `QLinearConcat`, only with `DQ` on every input).
pub fn quantized_tensors(g: &GraphProto, plan: &Plan) -> BTreeSet<String> {
    let int8_conv = |n: &NodeProto| {
        n.op_type.as_deref() == Some("Conv")
            && !plan
                .fp32_convs
                .contains(n.name.as_deref().unwrap_or_default())
    };
    let producer: BTreeMap<&str, &NodeProto> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let mut set: BTreeSet<String> = BTreeSet::new();
    for n in g
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("Relu"))
    {
        let after_int8 = n
            .input
            .first()
            .and_then(|i| producer.get(i.as_str()))
            .is_some_and(|p| int8_conv(p));
        if after_int8 {
            set.extend(n.output.first().cloned());
        }
    }
    let graph_outputs = output_names(g);
    for n in g.node.iter().filter(|n| int8_conv(n)) {
        set.extend(n.input.first().cloned());
        // A graph output straight from an int8 convolution (the logits): quantized too, so ONNX
        // Runtime fuses the convolution, then dequantized back to the output's name.
        set.extend(
            n.output
                .first()
                .filter(|o| graph_outputs.contains(o.as_str()))
                .cloned(),
        );
    }
    // Backwards through MaxPool/Resize/Concat until nothing changes (the graph is a DAG, so
    // this ends after at most depth-many passes).
    loop {
        let before = set.len();
        for n in g.node.iter().rev() {
            let through = match n.op_type.as_deref() {
                Some("MaxPool" | "Resize") => n.input.iter().take(1).collect::<Vec<_>>(),
                Some("Concat") => n.input.iter().collect(),
                _ => continue,
            };
            if n.output.first().is_some_and(|o| set.contains(o)) {
                set.extend(through.into_iter().cloned());
            }
        }
        if set.len() == before {
            return set;
        }
    }
}

fn quantize_node(tensor: &str) -> NodeProto {
    NodeProto {
        input: vec![
            tensor.to_string(),
            format!("{tensor}/scale"),
            format!("{tensor}/zero_point"),
        ],
        output: vec![format!("{tensor}/q")],
        name: Some(format!("{tensor}/quantize")),
        op_type: Some("QuantizeLinear".into()),
        ..Default::default()
    }
}

fn dequantize_node(
    out: &str,
    x: &str,
    scale: &str,
    zero_point: &str,
    axis: Option<i64>,
) -> NodeProto {
    NodeProto {
        input: vec![x.to_string(), scale.to_string(), zero_point.to_string()],
        output: vec![out.to_string()],
        name: Some(out.to_string()),
        op_type: Some("DequantizeLinear".into()),
        attribute: axis
            .map(|a| AttributeProto {
                name: Some("axis".into()),
                r#type: Some(attribute_type::INT),
                i: Some(a),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// OIHW weights with input channels zero-padded to a multiple of [`CHANNEL_MULTIPLE`]: (values,
/// new dims, channels added).
fn pad_input_channels(w: &[f32], dims: &[i64]) -> (Vec<f32>, Vec<i64>, i64) {
    let (Some(&cout), Some(&cin)) = (dims.first(), dims.get(1)) else {
        return (w.to_vec(), dims.to_vec(), 0);
    };
    let multiple = CHANNEL_MULTIPLE as i64;
    let pad = (multiple - cin % multiple) % multiple;
    if pad == 0 || cout <= 0 || cin <= 0 {
        return (w.to_vec(), dims.to_vec(), 0);
    }
    let kernel = w.len() / (cout * cin) as usize;
    let (cin, cin_padded) = (cin as usize, (cin + pad) as usize);
    let mut out = vec![0f32; cout as usize * cin_padded * kernel];
    for (o, src) in w.chunks(cin * kernel).enumerate() {
        out[o * cin_padded * kernel..][..cin * kernel].copy_from_slice(src);
    }
    let mut new_dims = dims.to_vec();
    new_dims[1] = cin_padded as i64;
    (out, new_dims, pad)
}

/// The values of an fp32 initializer written with `raw_data`.
fn f32_values(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != Some(data_type::FLOAT) {
        return None;
    }
    let raw = t.raw_data.as_ref()?;
    Some(
        raw.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

fn tensor(name: &str, dims: &[i64], ty: i32, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(ty),
        name: Some(name.to_string()),
        doc_string: None,
        raw_data: Some(raw),
    }
}

fn scalar_f32(name: &str, v: f32) -> TensorProto {
    tensor(name, &[], data_type::FLOAT, v.to_le_bytes().to_vec())
}

fn tensor_f32(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    tensor(
        name,
        dims,
        data_type::FLOAT,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn tensor_u8(name: &str, dims: &[i64], v: &[u8]) -> TensorProto {
    tensor(name, dims, data_type::UINT8, v.to_vec())
}

fn tensor_i8(name: &str, dims: &[i64], v: &[i8]) -> TensorProto {
    tensor(
        name,
        dims,
        data_type::INT8,
        v.iter().map(|&x| x as u8).collect(),
    )
}

fn tensor_i32(name: &str, dims: &[i64], v: &[i32]) -> TensorProto {
    tensor(
        name,
        dims,
        data_type::INT32,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn tensor_i64(name: &str, dims: &[i64], v: &[i64]) -> TensorProto {
    tensor(
        name,
        dims,
        data_type::INT64,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, name: &str, inputs: &[&str]) -> NodeProto {
        NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.to_string()],
            name: Some(name.to_string()),
            op_type: Some(op.into()),
            ..Default::default()
        }
    }

    /// A two-level U-Net in miniature: conv, pool, conv, upsample, concat with the skip, conv,
    /// final 1×1.
    fn mini_unet() -> GraphProto {
        GraphProto {
            node: vec![
                node("Conv", "c1", &["input", "w1"]),
                node("Relu", "r1", &["c1"]),
                node("MaxPool", "p1", &["r1"]),
                node("Conv", "c2", &["p1", "w2"]),
                node("Relu", "r2", &["c2"]),
                node("Resize", "u", &["r2", "", "scales"]),
                node("Concat", "k", &["u", "r1"]),
                node("Conv", "c3", &["k", "w3"]),
                node("Relu", "r3", &["c3"]),
                node("Conv", "logits", &["r3", "w4"]),
            ],
            output: vec![ValueInfoProto {
                name: Some("logits".into()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_tensors_an_int8_operator_touches_are_quantized() {
        let g = mini_unet();
        let plan = |fp32: &[&str]| Plan {
            fp32_convs: set(fp32),
        };
        // Default: everything, the logits too (the graph output the final 1×1 writes).
        assert_eq!(
            quantized_tensors(&g, &Plan::default()),
            set(&["input", "r1", "p1", "r2", "u", "k", "r3", "logits"])
        );
        // The final 1×1 kept fp32: it reads its input through a DQ and writes float logits.
        assert_eq!(
            quantized_tensors(&g, &plan(&["logits"])),
            set(&["input", "r1", "p1", "r2", "u", "k", "r3"])
        );
        // The decoder conv kept fp32: its concat, the upsampled tensor and its own output stay
        // float (no Q → DQ round trip); r2 is still an int8 conv's output, r1 an int8 pool's input.
        assert_eq!(
            quantized_tensors(&g, &plan(&["c3", "logits"])),
            set(&["input", "r1", "p1", "r2"])
        );
        // The first conv kept fp32: the photo goes in as float.
        assert_eq!(
            quantized_tensors(&g, &plan(&["c1", "logits"])),
            set(&["r1", "p1", "r2", "u", "k", "r3"])
        );
    }

    #[test]
    fn keep_fp32_must_name_a_convolution_of_the_model() {
        let m = ModelProto {
            graph: Some(mini_unet()),
            ..Default::default()
        };
        let plan = Plan {
            fp32_convs: set(&["dec9/conv0"]),
        };
        let err = quantize(&m, &BTreeMap::new(), &plan).unwrap_err();
        let text = err.to_string();
        let QuantizeError::UnknownConv { name, known } = err else {
            panic!("not UnknownConv: {text}");
        };
        assert_eq!(
            (name.as_str(), known.as_str()),
            ("dec9/conv0", "c1, c2, c3, logits")
        );
        assert!(text.contains("hint:"), "{text}");
    }

    /// The first convolution reads 3 channels: quantized, its uint8 input is padded to 4 and its
    /// weights get a zero fourth channel; the logits leave through Q → DQ under their own name,
    /// clipped to ±LOGIT_LIMIT.
    #[test]
    fn channels_are_padded_to_four_and_the_logits_are_quantized_under_their_name() {
        let (w, dims, pad) = pad_input_channels(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3, 1, 1]);
        assert_eq!((dims, pad), (vec![2, 4, 1, 1], 1));
        assert_eq!(w, vec![1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 6.0, 0.0]);
        assert_eq!(pad_input_channels(&[1.0; 8], &[2, 4, 1, 1]).2, 0);

        let f32_init = |name: &str, dims: &[i64]| {
            let n: i64 = dims.iter().product();
            tensor_f32(name, dims, &vec![0.5; n as usize])
        };
        let mut g = GraphProto {
            node: vec![
                node("Conv", "c1", &["input", "w1", "b1"]),
                node("Relu", "r1", &["c1"]),
                node("Conv", "logits", &["r1", "w2", "b2"]),
            ],
            initializer: vec![
                f32_init("w1", &[2, 3, 3, 3]),
                f32_init("b1", &[2]),
                f32_init("w2", &[1, 2, 1, 1]),
                f32_init("b2", &[1]),
            ],
            ..Default::default()
        };
        g.output = mini_unet().output;
        let m = ModelProto {
            graph: Some(g),
            ..Default::default()
        };
        let ranges = BTreeMap::from([
            ("r1".to_string(), Range { min: 0.0, max: 3.0 }),
            (
                "logits".to_string(),
                Range {
                    min: -40.0,
                    max: 2.0,
                },
            ),
        ]);
        let q = quantize(&m, &ranges, &Plan::default()).unwrap();
        let g = q.graph.unwrap();
        let by_output = |name: &str| {
            g.node
                .iter()
                .find(|n| n.output.first().map(String::as_str) == Some(name))
                .unwrap_or_else(|| panic!("no node writes {name}"))
        };
        let pad = by_output("input/q/pad/c1");
        assert_eq!(pad.op_type.as_deref(), Some("Pad"));
        assert_eq!(pad.input[0], "input/q");
        assert_eq!(by_output("input/dq/c1/0").input[0], "input/q/pad/c1");
        let w1 = g
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some("w1/q"))
            .unwrap();
        assert_eq!(w1.dims, vec![2, 4, 3, 3]);
        // The 4th input channel of each output channel is 0.
        let raw = w1.raw_data.as_ref().unwrap();
        assert!(raw[27..36].iter().chain(&raw[63..72]).all(|b| *b == 0));
        // The second conv reads 2 channels of r1: padded to 4 as well.
        assert_eq!(by_output("r1/dq/logits/0").input[0], "r1/q/pad/logits");
        // logits: the conv writes logits/f, Q → DQ writes the graph output again.
        assert_eq!(by_output("logits/f").op_type.as_deref(), Some("Conv"));
        assert_eq!(by_output("logits/q").input[0], "logits/f");
        let dq = by_output("logits");
        assert_eq!(dq.op_type.as_deref(), Some("DequantizeLinear"));
        let names: BTreeSet<_> = g.node.iter().map(|n| n.name.clone()).collect();
        assert_eq!(names.len(), g.node.len(), "node names must be unique");
        let scale = g
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some("logits/scale"))
            .and_then(f32_values)
            .unwrap()[0];
        // [-40, 2] clipped to [-8, 2]: 10 / 255.
        assert!((scale - 10.0 / 255.0).abs() < 1e-6, "{scale}");
    }

    #[test]
    fn weights_are_symmetric_per_channel() {
        let (q, s) = quantize_weights(&[0.5, -1.0, 0.25, 0.0, 0.0, 0.0], 2);
        assert_eq!(s, vec![1.0 / 127.0, 1.0]);
        assert_eq!(q, vec![64, -127, 32, 0, 0, 0]);
    }

    #[test]
    fn activation_params_contain_zero_and_map_the_range() {
        let p = ActivationParams::from_range(Range {
            min: 0.0,
            max: 2.55,
        });
        assert!((p.scale - 0.01).abs() < 1e-7 && p.zero_point == 0, "{p:?}");
        let p = ActivationParams::from_range(Range {
            min: -1.0,
            max: 1.0,
        });
        // Real 0 sits in the middle of the 256 steps (127.5 in exact arithmetic; f32 rounding
        // of 1 / (2/255) may land on either side), so both ends stay within one step.
        assert!(
            (f32::from(p.zero_point) * p.scale - 1.0).abs() <= p.scale,
            "{p:?}"
        );
        assert!(
            ((255.0 - f32::from(p.zero_point)) * p.scale - 1.0).abs() <= p.scale,
            "{p:?}"
        );
        let p = ActivationParams::from_range(Range { min: 0.0, max: 0.0 });
        assert_eq!(p.scale, MIN_SCALE);
        let mut r = Range::EMPTY;
        r.observe(&[0.5, -0.25, 3.0]);
        assert_eq!(
            r,
            Range {
                min: -0.25,
                max: 3.0
            }
        );
    }

    #[test]
    fn bias_uses_the_accumulator_scale() {
        let (q, s) = quantize_bias(&[0.5, -0.02], 0.1, &[0.01, 0.002]);
        // The bias scale is the product of the input and weight scales (f32 arithmetic).
        assert_eq!(s, vec![0.1f32 * 0.01, 0.1f32 * 0.002]);
        assert!(
            (s[0] - 0.001).abs() < 1e-9 && (s[1] - 0.0002).abs() < 1e-9,
            "{s:?}"
        );
        assert_eq!(q, vec![500, -100]);
    }
}
