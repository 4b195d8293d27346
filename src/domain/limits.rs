//! Product limits: how large and how deep any input may be. Each is checked before work
//! is done, when a value comes in (never when stored data is read back, so lowering a
//! limit never makes saved data unreadable). Defaults are documented in the README's
//! "Limits and security" section; every one can be changed by configuration.

/// Limits on what the engine accepts. `Limits::default()` is the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Nesting depth of any JSON value taken in (metadata, attributes, event properties,
    /// flow definitions). Arrays and objects count one level each.
    pub json_depth: usize,
    /// Serialized size of a completed step's metadata.
    pub metadata_bytes: usize,
    /// Serialized size of a subject's or workspace's attributes.
    pub attributes_bytes: usize,
    /// Serialized size of an event's properties.
    pub event_properties_bytes: usize,
    /// Serialized size of a flow definition.
    pub definition_bytes: usize,
    /// Length of a subject, workspace or event id.
    pub id_bytes: usize,
    /// Length of a flow, step, experiment or other key.
    pub key_bytes: usize,
    /// Steps in one flow definition.
    pub steps_per_flow: usize,
    /// `dependsOn` entries of one step.
    pub depends_on_per_step: usize,
    /// Nodes (operators and leaves) of one condition.
    pub condition_nodes: usize,
    /// Nesting depth of one condition.
    pub condition_depth: usize,
    /// Points one step may award.
    pub points_per_step: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            json_depth: 32,
            metadata_bytes: 16 * 1024,
            attributes_bytes: 64 * 1024,
            event_properties_bytes: 32 * 1024,
            definition_bytes: 1024 * 1024,
            id_bytes: 256,
            key_bytes: 128,
            steps_per_flow: 500,
            depends_on_per_step: 64,
            condition_nodes: 256,
            condition_depth: 16,
            points_per_step: 1_000_000,
        }
    }
}
