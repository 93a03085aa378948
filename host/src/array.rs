//! A host copy of one array: row-major `f32` values with their shape. Everything the analysis computes on
//! crosses from the device in this form.

/// Row-major `f32` values and their shape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}
