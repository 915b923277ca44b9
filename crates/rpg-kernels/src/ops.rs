//! The ops of this crate as plain functions over tensors, differentiable
//! where Candle's fast paths drop gradients or refuse a backward pass.

pub use crate::activation::{add_relu, relu, relu6};
pub use crate::channel_bias::add_channel_bias;
pub use crate::conv::conv2d_op as conv2d;
pub use crate::layer_norm::layer_norm;
pub use crate::linear::linear_op as linear;
pub use crate::pool::max_pool2d;
