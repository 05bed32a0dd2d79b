//! The one integration-test binary: a module per capability, helpers in `util`.

mod actions;
mod aws;
mod changes;
mod cli;
mod compare;
mod data;
mod deploy;
mod deploy_render;
mod docs;
mod dvc;
mod eks;
mod fuzz;
mod github_api;
mod infra;
#[cfg(feature = "train")]
mod interop;
mod kubeapi;
mod kubeapi_kubectl;
mod mlflow;
mod monitoring;
mod oci;
mod onnx;
mod quantize;
mod report;
mod serve;
mod servers;
#[cfg(feature = "train")]
mod template;
#[cfg(feature = "train")]
mod train;
// Real TorchServe on a trained model's archive (issue 17).
#[cfg(feature = "train")]
mod torchserve;
mod util;
mod workflows;
