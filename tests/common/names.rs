//! Raw field files as the data set names them: `NAME_<d0>x<d1>x...x<dn>.f32|.f64`. Shared by
//! the integration tests (`tests/common`) and the examples that read fields
//! (`#[path = "../tests/common/names.rs"]`).

use resid::DType;

/// `NAME_<d0>x<d1>x...x<dn>.f32|.f64` -> (element type, shape, C order).
pub fn parse_name(name: &str) -> Option<(DType, Vec<usize>)> {
    let (stem, ext) = name.rsplit_once('.')?;
    let dtype = match ext {
        "f32" => DType::F32,
        "f64" => DType::F64,
        _ => return None,
    };
    let dims = stem.rsplit_once('_')?.1;
    let shape: Option<Vec<usize>> = dims.split('x').map(|d| d.parse().ok()).collect();
    Some((dtype, shape?))
}

/// Merges the leading dimensions of a rank > 3 shape (what `scripts/bench` does).
pub fn as_3d(shape: &[usize]) -> Vec<usize> {
    if shape.len() <= 3 {
        return shape.to_vec();
    }
    let n = shape.len();
    vec![shape[..n - 2].iter().product(), shape[n - 2], shape[n - 1]]
}
