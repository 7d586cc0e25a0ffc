//! Int8 matrix multiply for quantized linear layers (placeholder; being written).
