//! The one integration-test binary: a module per capability, helpers in `util`.

mod cli;
mod onnx;
mod serve;
mod util;
