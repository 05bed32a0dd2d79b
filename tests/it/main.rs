//! The one integration-test binary: a module per capability, helpers in `util`.

mod cli;
mod data;
mod onnx;
mod serve;
mod util;
