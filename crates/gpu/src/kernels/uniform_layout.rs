//! Checks that a kernel's params struct still mirrors the uniform struct of its WGSL, as naga
//! lays it out for the GPU: the two are edited apart, and a drift would be read as garbage
//! parameters, not an error.

use wgpu::naga;

/// A Rust field type and the WGSL scalar it is read as.
pub(super) trait WgslScalar {
    const SCALAR: naga::Scalar;
}

impl WgslScalar for u32 {
    const SCALAR: naga::Scalar = naga::Scalar::U32;
}

impl WgslScalar for f32 {
    const SCALAR: naga::Scalar = naga::Scalar::F32;
}

/// The WGSL scalar of the field that `field` borrows (called with `|p| &p.field`).
pub(super) fn scalar_of<P, F: WgslScalar>(_field: impl Fn(&P) -> &F) -> naga::Scalar {
    F::SCALAR
}

/// Panics unless the one uniform variable of `wgsl` is a struct with exactly `fields` (name,
/// byte offset, scalar), in order, and the size of `P`.
pub(super) fn assert_members<P: bytemuck::Pod>(wgsl: &str, fields: &[(&str, usize, naga::Scalar)]) {
    let params = std::any::type_name::<P>();
    let module = naga::front::wgsl::parse_str(wgsl).unwrap_or_else(|e| panic!("{}", e.emit_to_string(wgsl)));
    let uniforms: Vec<_> =
        module.global_variables.iter().filter(|(_, g)| g.space == naga::AddressSpace::Uniform).collect();
    let [(_, uniform)] = uniforms[..] else {
        panic!("{params}: the WGSL has {} uniform variables, not one", uniforms.len());
    };
    let ty = &module.types[uniform.ty];
    let naga::TypeInner::Struct { members, span } = &ty.inner else {
        panic!("{params}: the WGSL uniform is not a struct");
    };
    let wgsl_fields: Vec<(&str, usize, naga::Scalar)> = members
        .iter()
        .map(|m| {
            let name = m.name.as_deref().unwrap_or_default();
            let naga::TypeInner::Scalar(scalar) = module.types[m.ty].inner else {
                panic!("{params}: WGSL member {name} is not a scalar");
            };
            (name, m.offset as usize, scalar)
        })
        .collect();
    let wgsl_struct = ty.name.as_deref().unwrap_or("the uniform struct");
    assert_eq!(fields, wgsl_fields, "{params} against WGSL {wgsl_struct}: (name, offset, scalar) of each member");
    assert_eq!(size_of::<P>(), *span as usize, "{params} against WGSL {wgsl_struct}: size in bytes");
}

/// `assert_mirrors_uniform!(Params, wgsl, [field, ...])` lists every field of `Params` in order
/// and checks them, and its size, against the uniform struct of the WGSL source `wgsl`.
macro_rules! assert_mirrors_uniform {
    ($params:ty, $wgsl:expr, [$($field:ident),* $(,)?]) => {
        $crate::kernels::uniform_layout::assert_members::<$params>(
            $wgsl,
            &[$((
                stringify!($field),
                ::std::mem::offset_of!($params, $field),
                $crate::kernels::uniform_layout::scalar_of(|p: &$params| &p.$field),
            )),*],
        )
    };
}

pub(crate) use assert_mirrors_uniform;
