//! Models assembled from `nn` layers: the encoders of ConVIRT.

pub mod bert;
pub mod convirt;
pub mod resnet;

pub use resnet::{Arch, ResNet};
