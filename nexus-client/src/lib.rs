//! Client for Nexus's internal API, generated at build time from the
//! checked-in OpenAPI document.  The background task and DNS types are the
//! shared Rust types, so callers get their methods (for example the
//! `Display` of an activation reason) rather than look-alike copies.

progenitor::generate_api!(
    spec = "../openapi/nexus-internal.json",
    interface = Builder,
    replace = {
        ActivationOutcome = background_task_types::ActivationOutcome,
        ActivationReason = background_task_types::ActivationReason,
        ActivationRecord = background_task_types::ActivationRecord,
        BackgroundTask = background_task_types::BackgroundTask,
        CurrentStatus = background_task_types::CurrentStatus,
        LastActivation = background_task_types::LastActivation,
        Duration = std::time::Duration,
        DnsChange = dns_types::DnsChange,
        DnsGroup = dns_types::DnsGroup,
        DnsRecord = dns_types::DnsRecord,
        DnsVersion = dns_types::DnsVersion,
        NameRecords = dns_types::NameRecords,
        NameRemoval = dns_types::NameRemoval,
        SrvRecord = dns_types::SrvRecord,
        NexusStatus = nexus_types::NexusStatus,
        NexusReadiness = nexus_types::NexusReadiness,
        GroupReadiness = nexus_types::GroupReadiness,
        GenerationRecord = nexus_types::propagation_history::GenerationRecord,
        NexusHistory = nexus_types::propagation_history::NexusHistory,
        PushAttempt = nexus_types::propagation_history::PushAttempt,
        PropagationOutcome = nexus_types::task_status::PropagationOutcome,
        PropagationResult = nexus_types::task_status::PropagationResult,
        PushKind = nexus_types::task_status::PushKind,
    }
);
