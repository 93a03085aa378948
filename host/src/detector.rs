//! Head detectors a task can declare (TransformerLens `head_detector` patterns).

/// A TransformerLens head-detector pattern a task asks every head to be scored against (`head_detector`'s
/// names; the patterns depend only on the tokens, so any task can declare them).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum HeadDetector {
    /// Attention from each token to the one before it.
    PreviousTokenHead,
    /// Attention from each token to earlier copies of itself.
    DuplicateTokenHead,
    /// Attention from each token to the token after an earlier copy of itself.
    InductionHead,
}

impl HeadDetector {
    pub const ALL: [HeadDetector; 3] = [
        HeadDetector::PreviousTokenHead,
        HeadDetector::DuplicateTokenHead,
        HeadDetector::InductionHead,
    ];

    /// The score's name in the rows (`heads.L0H1.scores.<name>`), TransformerLens's.
    pub fn name(self) -> &'static str {
        match self {
            HeadDetector::PreviousTokenHead => "previous_token_head",
            HeadDetector::DuplicateTokenHead => "duplicate_token_head",
            HeadDetector::InductionHead => "induction_head",
        }
    }
}
