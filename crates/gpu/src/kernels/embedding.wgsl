// y[t, :] = table[ids[t] - row0, :] for the ids in this table chunk's rows [row0, row0 + rows):
// vocabularies larger than one storage binding are split over several chunks, one dispatch each.
// The table (binding 0) and `value(j)`, its j-th value, come from the f32 or f16 prefix
// (embedding.rs).
struct Params { tokens: u32, dim: u32, rows: u32, row0: u32 }
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    let i = g.x + g.y * 65535u * 64u;
    if (i >= p.tokens * p.dim) { return; }
    let id = ids[i / p.dim];
    if (id < p.row0 || id >= p.row0 + p.rows) { return; }
    y[i] = value((id - p.row0) * p.dim + i % p.dim);
}
