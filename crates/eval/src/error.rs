//! What can go wrong reading a suite or scoring its rows.

/// A suite's data or scores cannot be used; the message names the file, row or column.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file that is not the format its name says, or that the reader cannot decode.
    #[error("{file}: {message}")]
    File { file: String, message: String },
    /// A row without a column the suite needs, or with a value of the wrong type.
    #[error("{suite} row {row}: {message}")]
    Row { suite: &'static str, row: String, message: String },
    /// Scores that do not fit their row (a front-end bug or an edited results file).
    #[error("scores for {suite} row {row}: {message}")]
    Scores { suite: &'static str, row: String, message: String },
    /// Nothing to evaluate, an unknown suite name, or a suite mismatch.
    #[error("{0}")]
    Input(String),
}
