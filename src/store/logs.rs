//! Log fragments: numbered pieces of a job's `output` or `serial` log, stored once per
//! `(job, log type, fragment number)` so an agent can resend freely.

use crate::job::time::Micros;
use crate::job::Phase;

/// How many of a killed phase's last output fragments are searched for the agent's line
/// saying why: the line is followed only by what the phase printed while it was being
/// killed (the reference agent: one chunk; ours: a few seconds' worth).
pub(super) const KILL_LINE_WINDOW: i64 = 32;

pub struct Fragment {
    pub fragment_number: i64,
    pub phase: Phase,
    pub timestamp: Micros,
    pub log_data: String,
}

#[derive(Default, Clone)]
pub struct FragmentQuery {
    pub start_fragment: i64,
    pub start_timestamp: Option<Micros>,
    pub phase: Option<String>,
}

/// One phase's share of a log.
#[derive(Debug, PartialEq)]
pub struct PhaseLog {
    pub phase: &'static str,
    /// -1 when the phase has no matching fragment.
    pub last_fragment_number: i64,
    pub log_data: String,
}

impl PhaseLog {
    /// The empty log of every phase `query` asks for, in phase order.
    pub(super) fn each_asked(query: &FragmentQuery) -> Vec<PhaseLog> {
        let asked = |phase: &&&str| {
            query
                .phase
                .as_deref()
                .is_none_or(|wanted| wanted == **phase)
        };
        Phase::NAMES
            .iter()
            .filter(asked)
            .map(|phase| PhaseLog {
                phase,
                last_fragment_number: -1,
                log_data: String::new(),
            })
            .collect()
    }

    /// Adds a fragment (read in number order) to its phase's log, if that was asked for.
    pub(super) fn add(logs: &mut [PhaseLog], phase: &str, fragment_number: i64, text: &str) {
        if let Some(log) = logs.iter_mut().find(|log| log.phase == phase) {
            log.last_fragment_number = fragment_number;
            log.log_data.push_str(text);
        }
    }
}
