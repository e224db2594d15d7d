//! The data layer, on the host only (no GPU, no tensors): decoding images and turning them into
//! the `f32` arrays the encoders take. Everything that can meet bad input returns an error
//! naming the file, so a loader can skip and count a corrupt item instead of stopping.

pub mod image;

pub use self::image::{eval_transform, load_image, Image, IMAGENET_MEAN, IMAGENET_STD};
