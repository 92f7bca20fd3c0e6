use berth_api::SchedulerSpec;
use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::plan::run_name;

fn scheduler() -> Scheduler {
    let mut s = Scheduler::new(
        "nightly-jobs",
        SchedulerSpec {
            workers: 2,
            env_from_secret: Some("db-connection".into()),
            ..SchedulerSpec::default()
        },
    );
    s.metadata.namespace = Some("tenant-ns".into());
    s.metadata.uid = Some("uid-1".into());
    s.metadata.labels = Some(BTreeMap::from([(
        "berth.dev/customer".into(),
        "acme-corp".into(),
    )]));
    s.metadata.annotations = Some(BTreeMap::from([
        ("pod.berth.dev/kwok-complete-after".into(), "20s".into()),
        ("unrelated.example/x".into(), "y".into()),
    ]));
    s
}

fn workflow() -> Workflow {
    Workflow {
        name: "vacuum".into(),
        schedule: "@hourly".into(),
        image: "registry.example/vacuum:1".into(),
        command: vec!["/vacuum".into()],
        env: vec![EnvVar {
            name: "MODE".into(),
            value: Some("full".into()),
            ..EnvVar::default()
        }],
        backoff_limit: Some(2),
        active_deadline_seconds: Some(600),
        ..Workflow::default()
    }
}

fn built(suspended: bool) -> Job {
    let s = scheduler();
    let owner = berth_kit::owner_ref(&s).unwrap();
    let scheduled = "2025-01-01T10:00:00Z".parse().unwrap();
    let run = RunToCreate {
        name: run_name("nightly-jobs", "vacuum", scheduled),
        workflow: "vacuum".into(),
        scheduled,
        suspended,
        trigger: Trigger::Schedule,
    };
    build(&s, &workflow(), &run, owner)
}

#[test]
fn the_job_is_owned_named_labelled_and_annotated() {
    let job = built(true);
    assert_eq!(job.name_any(), "vacuum-uq9od-28928760");
    assert_eq!(job.namespace().as_deref(), Some("tenant-ns"));
    let owner = &job.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Scheduler", "nightly-jobs", "uid-1")
    );
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    let l = job.labels();
    assert_eq!(l[WORKFLOW], "vacuum");
    assert_eq!(l[SCHEDULED_TIME], "1735725600");
    assert_eq!(l["berth.dev/customer"], "acme-corp");
    assert_eq!(l[INSTANCE], "nightly-jobs");
    assert_eq!(l[MANAGED_BY], "berth");
    assert_eq!(job.annotations()[SCHEDULED_TIME], "2025-01-01T10:00:00Z");
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.suspend, Some(true));
    assert_eq!(spec.backoff_limit, Some(2));
    assert_eq!(spec.active_deadline_seconds, Some(600));
    let pod_meta = spec.template.metadata.as_ref().unwrap();
    assert_eq!(pod_meta.labels.as_ref().unwrap()[WORKFLOW], "vacuum");
    let pod_annotations = pod_meta.annotations.as_ref().unwrap();
    assert_eq!(pod_annotations["berth.dev/kwok-complete-after"], "20s");
    assert!(!pod_annotations.contains_key("unrelated.example/x"));
    assert!(!pod_annotations.keys().any(|k| k.starts_with("pod.")));
    assert_eq!(built(false).spec.unwrap().suspend, Some(false));
}

#[test]
fn the_selector_matches_the_labels() {
    let job = built(false);
    for pair in selector("nightly-jobs").split(',') {
        let (k, v) = pair.split_once('=').unwrap();
        assert_eq!(job.labels().get(k).map(String::as_str), Some(v), "{k}");
    }
}

#[test]
fn the_pod_is_restricted_and_runs_the_workflow() {
    let pod = built(false).spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let psc = pod.security_context.unwrap();
    assert_eq!((psc.run_as_non_root, psc.run_as_user), (Some(true), Some(65532)));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let [c] = pod.containers.as_slice() else {
        panic!("one container")
    };
    assert_eq!(c.image.as_deref(), Some("registry.example/vacuum:1"));
    assert_eq!(c.command.as_deref(), Some(&["/vacuum".to_owned()][..]));
    assert_eq!(c.args, None, "the image's own arguments stay");
    assert_eq!(c.env.as_ref().unwrap()[0].name, "MODE");
    assert_eq!(
        c.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name,
        "db-connection"
    );
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(c.resources.as_ref(), Some(&default_resources()));
}

/// The image cannot be written to; `/tmp` can, and it is a bounded emptyDir, not the node's disk at will.
#[test]
fn the_root_filesystem_is_read_only_with_scratch_space_at_tmp() {
    let pod = built(false).spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let [mount] = c.volume_mounts.as_deref().unwrap() else {
        panic!("one mount")
    };
    assert_eq!(mount.mount_path, "/tmp");
    assert_ne!(mount.read_only, Some(true), "scratch space is writable");
    let [volume] = pod.volumes.as_deref().unwrap() else {
        panic!("one volume")
    };
    assert_eq!(volume.name, mount.name);
    let scratch = volume.empty_dir.as_ref().unwrap();
    assert_eq!(scratch.size_limit, Some(Quantity("1Gi".into())));
    assert_eq!(scratch.medium, None, "on disk, not in the pod's memory limit");
}

#[test]
fn a_workflow_names_its_own_resources_and_no_secret_means_no_env_from() {
    let mut s = scheduler();
    s.spec.env_from_secret = None;
    let mut w = workflow();
    let mine = ResourceRequirements {
        requests: Some(BTreeMap::from([("memory".into(), Quantity("1Gi".into()))])),
        ..ResourceRequirements::default()
    };
    w.resources = Some(mine.clone());
    let run = RunToCreate {
        name: "vacuum-uq9od-0".into(),
        workflow: "vacuum".into(),
        scheduled: Timestamp::UNIX_EPOCH,
        suspended: false,
        trigger: Trigger::Schedule,
    };
    let job = build(&s, &w, &run, berth_kit::owner_ref(&s).unwrap());
    let c = &job.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(c.resources.as_ref(), Some(&mine));
    assert_eq!(c.env_from, None);
}

fn condition(type_: &str, at: &str) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        last_transition_time: Some(Time(at.parse().unwrap())),
        ..JobCondition::default()
    }
}

#[test]
fn view_reads_state_and_times() {
    let queued = built(true);
    let v = view(&queued).unwrap();
    assert_eq!(v.state, RunState::Queued);
    assert_eq!(v.workflow, "vacuum");
    assert_eq!(v.scheduled, "2025-01-01T10:00:00Z".parse().unwrap());
    assert_eq!(view(&built(false)).unwrap().state, RunState::Active);

    let mut done = built(false);
    done.status = Some(JobStatus {
        conditions: Some(vec![
            condition("SuccessCriteriaMet", "2025-01-01T10:00:40Z"),
            condition("Complete", "2025-01-01T10:00:42Z"),
        ]),
        completion_time: Some(Time("2025-01-01T10:00:41Z".parse().unwrap())),
        ..JobStatus::default()
    });
    let v = view(&done).unwrap();
    assert_eq!(
        (v.state, v.finished),
        (RunState::Succeeded, Some("2025-01-01T10:00:41Z".parse().unwrap()))
    );

    let mut failed = built(true);
    failed.status = Some(JobStatus {
        conditions: Some(vec![condition("Failed", "2025-01-01T10:10:00Z")]),
        ..JobStatus::default()
    });
    let v = view(&failed).unwrap();
    assert_eq!(
        (v.state, v.finished),
        (RunState::Failed, Some("2025-01-01T10:10:00Z".parse().unwrap()))
    );
}

/// The trigger goes onto the Job and comes back from it: the request time in the due-time label is how a
/// restarted operator knows a request was acted on. A Job from before the label was scheduled.
#[test]
fn the_trigger_is_labelled_and_read_back() {
    let s = scheduler();
    let requested: Timestamp = "2025-01-01T10:00:07Z".parse().unwrap();
    let run = RunToCreate {
        name: crate::plan::manual_run_name("nightly-jobs", "vacuum", requested),
        workflow: "vacuum".into(),
        scheduled: requested,
        suspended: true,
        trigger: Trigger::Manual,
    };
    let job = build(&s, &workflow(), &run, berth_kit::owner_ref(&s).unwrap());
    assert_eq!(job.labels()[TRIGGER_LABEL], "manual");
    assert_eq!(job.labels()[SCHEDULED_TIME], "1735725607");
    let v = view(&job).unwrap();
    assert_eq!(
        (v.trigger, v.scheduled, v.state),
        (Trigger::Manual, requested, RunState::Queued)
    );

    let scheduled = built(false);
    assert_eq!(scheduled.labels()[TRIGGER_LABEL], "schedule");
    assert_eq!(view(&scheduled).unwrap().trigger, Trigger::Schedule);
    let mut unlabelled = built(false);
    unlabelled.metadata.labels.as_mut().unwrap().remove(TRIGGER_LABEL);
    assert_eq!(view(&unlabelled).unwrap().trigger, Trigger::Schedule);
}

#[test]
fn view_skips_foreign_and_deleted_jobs_and_falls_back_to_the_annotation() {
    let mut foreign = built(false);
    foreign.metadata.labels.as_mut().unwrap().remove(WORKFLOW);
    assert_eq!(view(&foreign), None);

    let mut deleting = built(false);
    deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    assert_eq!(view(&deleting), None);

    let mut annotated = built(false);
    annotated.metadata.labels.as_mut().unwrap().remove(SCHEDULED_TIME);
    assert_eq!(
        view(&annotated).unwrap().scheduled,
        "2025-01-01T10:00:00Z".parse().unwrap()
    );
}

fn owned_by(uid: &str, kind: &str, name: &str, controller: Option<bool>) -> OwnerReference {
    OwnerReference {
        api_version: "berth.dev/v1alpha1".into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller,
        ..OwnerReference::default()
    }
}

fn meta(owners: Vec<OwnerReference>, deleting: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some("sync-uq9od-28928760".into()),
        owner_references: (!owners.is_empty()).then_some(owners),
        deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
        ..ObjectMeta::default()
    }
}

/// What a 409 on creating a run means, by who holds the name: only this Scheduler's live Job is the run
/// made; its Job on the way out (or one gone by the time it is read) is tried again; anyone else's is a
/// conflict that names the holder.
#[test]
fn a_taken_name_is_ours_leaving_or_someone_elses() {
    let us = "uid-1";
    let ours = || owned_by(us, "Scheduler", "nightly-jobs", Some(true));
    let twin = || owned_by("uid-2", "Scheduler", "twin", Some(true));
    let cases: [(&str, Option<ObjectMeta>, Result<Holder, &str>); 8] = [
        ("our live run", Some(meta(vec![ours()], false)), Ok(Holder::Us)),
        (
            "our run, being deleted",
            Some(meta(vec![ours()], true)),
            Ok(Holder::Leaving),
        ),
        ("gone when read", None, Ok(Holder::Leaving)),
        (
            "another Scheduler's",
            Some(meta(vec![twin()], false)),
            Err("controlled by Scheduler twin (uid uid-2)"),
        ),
        (
            "another's, being deleted",
            Some(meta(vec![twin()], true)),
            Err("controlled by Scheduler twin (uid uid-2)"),
        ),
        (
            "a predecessor's of the same name",
            Some(meta(
                vec![owned_by("uid-0", "Scheduler", "nightly-jobs", Some(true))],
                false,
            )),
            Err("controlled by Scheduler nightly-jobs (uid uid-0)"),
        ),
        (
            "ours only as a non-controller owner",
            Some(meta(vec![owned_by(us, "Scheduler", "nightly-jobs", None)], false)),
            Err("has no controller"),
        ),
        ("hand-made", Some(meta(vec![], false)), Err("has no controller")),
    ];
    for (what, existing, expected) in cases {
        let got = holder(existing.as_ref(), us, None);
        match (expected, &got) {
            (Ok(h), _) => assert_eq!(got, h, "{what}"),
            (Err(says), Holder::Other(why)) => assert!(why.contains(says), "{what}: {why}"),
            (Err(_), _) => panic!("{what}: {got:?}, wanted a conflict"),
        }
    }
}

#[test]
fn only_jobs_the_scheduler_controls_are_its_runs() {
    let yes = meta(vec![owned_by("uid-1", "Scheduler", "s", Some(true))], false);
    let not_controller = meta(vec![owned_by("uid-1", "Scheduler", "s", Some(false))], false);
    let other = meta(vec![owned_by("uid-2", "Scheduler", "s", Some(true))], false);
    assert!(is_ours(&yes, "uid-1", None));
    assert!(!is_ours(&not_controller, "uid-1", None));
    assert!(!is_ours(&other, "uid-1", None));
    assert!(!is_ours(&meta(vec![], false), "uid-1", None));
}

#[test]
fn a_controlled_job_berth_did_not_seal_is_no_run_and_holds_its_name_as_a_conflict() {
    let seal = berth_kit::seal::Seal::new(
        b"k",
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-01-01T00:00:00Z".parse().unwrap()),
    );
    let mut forged = meta(vec![owned_by("uid-1", "Scheduler", "s", Some(true))], false);
    forged.namespace = Some("t1".to_owned());
    forged.name = Some("nightly-abcde-1".to_owned());
    forged.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-06-01T00:00:00Z".parse().unwrap(),
    ));
    assert!(!is_ours(&forged, "uid-1", Some(&seal)));
    assert!(
        matches!(holder(Some(&forged), "uid-1", Some(&seal)), Holder::Other(why) if why.contains("seal"))
    );
    let mut sealed = forged;
    seal.apply(&mut sealed, "uid-1");
    assert!(is_ours(&sealed, "uid-1", Some(&seal)));
    assert_eq!(holder(Some(&sealed), "uid-1", Some(&seal)), Holder::Us);
}
