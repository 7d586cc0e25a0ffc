//! How a list of sequences is cut into batches: what is scored together, and where the job
//! yields (progress, cancel) between them.

use rewardlens_models::batching::shared_prompt_runs;
use std::ops::Range;

/// Sequences packed into one WebGPU pass (and scored between two cancel checks).
pub const GPU_BATCH: usize = 8;
/// Most responses to one prompt scored together on the CPU, which computes their shared
/// prompt once; other inputs go one at a time (cancellation and progress per sequence).
pub const CPU_SHARED_BATCH: usize = 4;
/// Most responses to one prompt that continue one prompt pass on the pipeline.
pub const PIPELINE_SHARED_BATCH: usize = 16;

/// Sequences scored in one go, then a yield: `range` of the inputs, in `groups` that share a
/// prompt (each within `range`, in the inputs' numbering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub range: Range<usize>,
    pub groups: Vec<Range<usize>>,
}

impl Batch {
    /// `groups` numbered from the start of `range`.
    pub fn local_groups(&self) -> Vec<Range<usize>> {
        self.groups.iter().map(|g| g.start - self.range.start..g.end - self.range.start).collect()
    }
}

/// `0..n` in consecutive ranges of `size`.
pub fn fixed_groups(n: usize, size: usize) -> Vec<Range<usize>> {
    let size = size.max(1);
    (0..n).step_by(size).map(|s| s..(s + size).min(n)).collect()
}

/// One batch per group.
pub fn each(groups: Vec<Range<usize>>) -> Vec<Batch> {
    groups.into_iter().map(|g| Batch { range: g.clone(), groups: vec![g] }).collect()
}

/// Every group in one batch over `0..n`: the pipeline takes the inputs back to back, so its
/// stages stay busy.
pub fn one_pass(n: usize, groups: Vec<Range<usize>>) -> Vec<Batch> {
    vec![Batch { range: 0..n, groups }]
}

/// The CPU engine: consecutive inputs sharing a prompt (at least `min_prefix` tokens, see
/// `batching::shared_prompt_runs`) scored as one batch, at most `CPU_SHARED_BATCH` a batch.
pub fn cpu_batches(rows: &[&[u32]], min_prefix: Option<usize>) -> Vec<Batch> {
    each(shared_prompt_runs(rows, min_prefix, CPU_SHARED_BATCH))
}

/// The pipeline: every input in one pass, the responses to one prompt continuing one prompt
/// pass (at most `PIPELINE_SHARED_BATCH`).
pub fn pipeline_batches(rows: &[&[u32]], min_prefix: usize) -> Vec<Batch> {
    one_pass(rows.len(), shared_prompt_runs(rows, Some(min_prefix), PIPELINE_SHARED_BATCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_groups_cover_every_input_once_in_order() {
        assert_eq!(fixed_groups(5, 2), vec![0..2, 2..4, 4..5]);
        assert_eq!(fixed_groups(3, 8), vec![0..3]);
        assert_eq!(fixed_groups(0, 8), Vec::<Range<usize>>::new());
        // A remote batch size of 0 still makes progress.
        assert_eq!(fixed_groups(2, 0), vec![0..1, 1..2]);
        let batches = each(fixed_groups(3, 2));
        assert_eq!(batches.iter().map(|b| b.range.clone()).collect::<Vec<_>>(), vec![0..2, 2..3]);
        assert!(batches.iter().all(|b| b.groups == std::slice::from_ref(&b.range)), "{batches:?}");
        assert_eq!(batches[1].local_groups(), vec![0..1]);
    }

    #[test]
    fn shared_prompts_batch_on_the_cpu_and_pass_once_through_the_pipeline() {
        let prompt: Vec<u32> = (0..40).collect();
        let answer = |a: u32| prompt.iter().copied().chain([1000 + a, 2000 + a]).collect::<Vec<u32>>();
        let other: Vec<u32> = (500..520).collect();
        let seqs: Vec<Vec<u32>> = (0..6).map(answer).chain([other]).collect();
        let rows: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();

        let cpu = cpu_batches(&rows, Some(8));
        // Six answers to one prompt, four at most a batch, then the unrelated input alone.
        assert_eq!(cpu.iter().map(|b| b.range.clone()).collect::<Vec<_>>(), vec![0..4, 4..6, 6..7]);
        assert!(cpu.iter().all(|b| b.groups == vec![b.range.clone()]));
        // No prefix reuse (a model that cannot share its prompt pass): one at a time.
        assert_eq!(cpu_batches(&rows, None).len(), 7);

        let pipe = pipeline_batches(&rows, 8);
        assert_eq!(pipe.len(), 1, "one pass");
        assert_eq!(pipe[0].range, 0..7);
        assert_eq!(pipe[0].groups, vec![0..6, 6..7]);
        assert_eq!(pipe[0].local_groups(), pipe[0].groups);
    }
}
