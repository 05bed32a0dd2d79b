//! Builds the U-Net `GraphProto` from a checkpoint: every layer comes from the checkpoint's
//! [`ModelSpec`](crate::model::ModelSpec), every weight from its tensors, BatchNorm folded into
//! the convolution before it. Pure data transformation: no I/O.

use crate::checkpoint::Checkpoint;
use crate::model::{BN_EPS, BlockSpec};

use super::OnnxError;
use super::proto::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_type, data_type, tensor_shape_proto, type_proto,
};

/// The constant `scales` input of every decoder Resize.
const UPSAMPLE_SCALES: &str = "upsample/scales";

/// Accumulates nodes and initializers in the order they are added (the order is part of the
/// deterministic output, and nodes are added in topological order by construction).
struct GraphBuilder<'c> {
    ckpt: &'c Checkpoint,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl<'c> GraphBuilder<'c> {
    fn new(ckpt: &'c Checkpoint) -> Self {
        GraphBuilder {
            ckpt,
            nodes: Vec::new(),
            initializers: Vec::new(),
        }
    }

    /// Adds `op_type(inputs) -> output` named after its output, and returns the output name.
    fn node(
        &mut self,
        output: &str,
        op_type: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: Some(output.to_string()),
            op_type: Some(op_type.to_string()),
            attribute: attributes,
            ..Default::default()
        });
        output.to_string()
    }

    fn initializer_f32(&mut self, name: &str, dims: &[usize], data: &[f32], doc: String) {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(data_type::FLOAT),
            name: Some(name.to_string()),
            doc_string: Some(doc),
            raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
        });
    }

    /// A checkpoint tensor as f32 values, checking its shape.
    fn weight(&self, name: &str, shape: &[usize]) -> Result<&'c [f32], OnnxError> {
        super::f32_weight(self.ckpt, name, shape)
    }

    /// `Conv3×3 pad 1` (`{block}.{conv}`) with the eval-mode `BatchNorm2d` after it
    /// (`{block}.{bn}`) folded in, then `Relu`. Returns the Relu output.
    ///
    /// BN(conv(x)) = γ·(w∗x + b − μ)/√(σ²+ε) + β = (s·w)∗x + (s·(b − μ) + β) with s = γ/√(σ²+ε),
    /// per output channel. Folding is done in f64 and rounded once to f32.
    fn conv_bn_relu(
        &mut self,
        x: &str,
        block: &str,
        conv: usize,
        bn: usize,
        cin: usize,
        cout: usize,
    ) -> Result<String, OnnxError> {
        let w = self.weight(&format!("{block}.{conv}.weight"), &[cout, cin, 3, 3])?;
        let b = self.weight(&format!("{block}.{conv}.bias"), &[cout])?;
        let gamma = self.weight(&format!("{block}.{bn}.weight"), &[cout])?;
        let beta = self.weight(&format!("{block}.{bn}.bias"), &[cout])?;
        let mean = self.weight(&format!("{block}.{bn}.running_mean"), &[cout])?;
        let var = self.weight(&format!("{block}.{bn}.running_var"), &[cout])?;
        let per_out = cin * 9;
        let mut w_folded = Vec::with_capacity(w.len());
        let mut b_folded = Vec::with_capacity(cout);
        for o in 0..cout {
            let s = f64::from(gamma[o]) / (f64::from(var[o]) + BN_EPS).sqrt();
            w_folded.extend(
                w[o * per_out..(o + 1) * per_out]
                    .iter()
                    .map(|&v| (f64::from(v) * s) as f32),
            );
            b_folded.push(((f64::from(b[o]) - f64::from(mean[o])) * s + f64::from(beta[o])) as f32);
        }
        let doc = format!("{block}.{conv} with BatchNorm {block}.{bn} folded in");
        let wn = format!("{block}.{conv}+{bn}.weight");
        let bn_ = format!("{block}.{conv}+{bn}.bias");
        self.initializer_f32(&wn, &[cout, cin, 3, 3], &w_folded, doc.clone());
        self.initializer_f32(&bn_, &[cout], &b_folded, doc);
        let y = self.node(
            &format!("{block}/conv{conv}"),
            "Conv",
            &[x, &wn, &bn_],
            vec![
                ints("kernel_shape", &[3, 3]),
                ints("pads", &[1, 1, 1, 1]),
                ints("strides", &[1, 1]),
                ints("dilations", &[1, 1]),
                int("group", 1),
            ],
        );
        Ok(self.node(&format!("{block}/relu{conv}"), "Relu", &[&y], vec![]))
    }

    /// Upstream's double-conv block: `[N, in, h, w] -> [N, out, h, w]`.
    fn block(&mut self, x: &str, b: &BlockSpec) -> Result<String, OnnxError> {
        let (cin, cout) = (b.in_channels as usize, b.out_channels as usize);
        let y = self.conv_bn_relu(x, &b.name, 0, 1, cin, cout)?;
        self.conv_bn_relu(&y, &b.name, 3, 4, cout, cout)
    }

    /// `MaxPool2d(2)`: `[N, C, h, w] -> [N, C, h/2, w/2]`.
    fn max_pool(&mut self, x: &str, name: &str) -> String {
        self.node(
            name,
            "MaxPool",
            &[x],
            vec![
                ints("kernel_shape", &[2, 2]),
                ints("strides", &[2, 2]),
                ints("pads", &[0, 0, 0, 0]),
            ],
        )
    }

    /// `F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)`:
    /// `[N, C, h, w] -> [N, C, 2h, 2w]`. With H and W multiples of 2^depth (the model's input
    /// contract, DESIGN §4) every skip is exactly twice the deeper tensor, so a constant scale of
    /// 2 gives the same sampling positions as upstream's `size=` (half_pixel with
    /// scale = out/in = 2). Why not `sizes` from the skip's Shape: ONNX Runtime's NCHWc
    /// optimizer only takes a Resize with constant scales into its blocked layout; with `sizes`
    /// every decoder level paid a layout round trip and an unblocked resize and concat (about
    /// 12 % of a 512×512 forward on this machine).
    fn upsample2x(&mut self, x: &str, prefix: &str) -> String {
        if !self
            .initializers
            .iter()
            .any(|t| t.name.as_deref() == Some(UPSAMPLE_SCALES))
        {
            // (N, C, H, W), shared by every decoder level.
            self.initializer_f32(
                UPSAMPLE_SCALES,
                &[4],
                &[1.0, 1.0, 2.0, 2.0],
                "Resize scales".into(),
            );
        }
        // Inputs X, roi, scales: roi omitted ("") since the transformation is not crop-and-resize.
        self.node(
            &format!("{prefix}/resize"),
            "Resize",
            &[x, "", UPSAMPLE_SCALES],
            vec![
                string("mode", "linear"),
                // half_pixel = PyTorch align_corners=False (src = (dst + 0.5)/scale − 0.5).
                // No `antialias` attribute: it arrived in opset 18; at 17 Resize never
                // antialiases, like F.interpolate(antialias=False).
                string("coordinate_transformation_mode", "half_pixel"),
            ],
        )
    }

    fn final_conv(&mut self, x: &str, cin: usize, cout: usize) -> Result<String, OnnxError> {
        let w = self.weight("final.weight", &[cout, cin, 1, 1])?.to_vec();
        let b = self.weight("final.bias", &[cout])?.to_vec();
        self.initializer_f32("final.weight", &[cout, cin, 1, 1], &w, "final".into());
        self.initializer_f32("final.bias", &[cout], &b, "final".into());
        Ok(self.node(
            super::OUTPUT_NAME,
            "Conv",
            &[x, "final.weight", "final.bias"],
            vec![
                ints("kernel_shape", &[1, 1]),
                ints("pads", &[0, 0, 0, 0]),
                ints("strides", &[1, 1]),
                ints("dilations", &[1, 1]),
                int("group", 1),
            ],
        ))
    }
}

/// The whole U-Net as a graph with input [`super::INPUT_NAME`] `[N, in, H, W]` and output
/// [`super::OUTPUT_NAME`] `[N, out, H, W]` (shapes below for upstream b=16, depth 4).
pub(super) fn unet_graph(ckpt: &Checkpoint, name: &str) -> Result<GraphProto, OnnxError> {
    let spec = ckpt.meta.spec;
    let mut g = GraphBuilder::new(ckpt);
    // [N, 3, H, W]
    let mut x = super::INPUT_NAME.to_string();
    let mut skips = Vec::with_capacity(spec.depth);
    for (i, enc) in spec.encoders().iter().enumerate() {
        // enc1: [N, 16, H, W] … enc4: [N, 128, H/8, W/8]
        let e = g.block(&x, enc)?;
        // pool1: [N, 16, H/2, W/2] … pool4: [N, 128, H/16, W/16]
        x = g.max_pool(&e, &format!("pool{}", i + 1));
        skips.push(e);
    }
    // [N, 256, H/16, W/16]
    x = g.block(&x, &spec.bottleneck())?;
    for (dec, skip) in spec.decoders().iter().zip(skips.iter().rev()) {
        // dec4: up [N, 256, H/8, W/8], cat [N, 384, H/8, W/8], out [N, 128, H/8, W/8]
        // …
        // dec1: up [N, 32, H, W], cat [N, 48, H, W], out [N, 16, H, W]
        let up = g.upsample2x(&x, &dec.name);
        // Upstream order: upsampled deeper features FIRST, then the skip.
        let cat = g.node(
            &format!("{}/concat", dec.name),
            "Concat",
            &[&up, skip],
            vec![int("axis", 1)],
        );
        x = g.block(&cat, dec)?;
    }
    // [N, 1, H, W]
    g.final_conv(&x, spec.base_filters as usize, spec.out_channels as usize)?;

    let dims_in = [
        dim_param("N"),
        dim_value(spec.in_channels),
        dim_param("H"),
        dim_param("W"),
    ];
    let dims_out = [
        dim_param("N"),
        dim_value(spec.out_channels),
        dim_param("H"),
        dim_param("W"),
    ];
    Ok(GraphProto {
        node: g.nodes,
        name: Some(name.to_string()),
        initializer: g.initializers,
        doc_string: Some(
            "U-Net (upstream WaterMetersUNet) with BatchNorm folded into the convolutions; \
             input: preprocessed RGB with H and W multiples of 16, output: logits (apply \
             sigmoid for probabilities)"
                .into(),
        ),
        input: vec![tensor_value_info(super::INPUT_NAME, &dims_in)],
        output: vec![tensor_value_info(super::OUTPUT_NAME, &dims_out)],
        value_info: vec![],
    })
}

fn tensor_value_info(name: &str, dims: &[tensor_shape_proto::Dimension]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(data_type::FLOAT),
                shape: Some(TensorShapeProto { dim: dims.to_vec() }),
            })),
            denotation: None,
        }),
        doc_string: None,
    }
}

fn dim_param(name: &str) -> tensor_shape_proto::Dimension {
    tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimParam(
            name.to_string(),
        )),
        denotation: None,
    }
}

fn dim_value(v: i64) -> tensor_shape_proto::Dimension {
    tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(v)),
        denotation: None,
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(attribute_type::INT),
        i: Some(v),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(attribute_type::INTS),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(attribute_type::STRING),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn zero_valued_int_attributes_are_present_on_the_wire() {
        // onnx.checker requires exactly one value field per attribute; `axis: 0` must be encoded.
        let bytes = int("axis", 0).encode_to_vec();
        let back = AttributeProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.i, Some(0));
    }
}
