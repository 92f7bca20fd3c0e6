use berth_kit::labels::labels;
use k8s_openapi::api::networking::v1::{NetworkPolicyIngressRule, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::*;

fn customer(name: &str, uid: &str) -> Customer {
    let mut c: Customer = serde_yaml::from_str(&format!("metadata: {{name: {name}}}\nspec: {{}}\n")).unwrap();
    c.metadata.uid = Some(uid.to_owned());
    c
}

fn owner(uid: &str) -> OwnerReference {
    OwnerReference {
        uid: uid.to_owned(),
        ..OwnerReference::default()
    }
}

/// A namespace labelled as berth labels tenants of `of`, with `owners` and the recorded Customer `uid`.
fn tenant_ns(of: &str, owners: &[&str], uid: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        labels: Some(labels(of, "tenant")),
        owner_references: Some(owners.iter().map(|u| owner(u)).collect()),
        annotations: uid.map(|u| [(CUSTOMER_UID.to_owned(), u.to_owned())].into()),
        ..ObjectMeta::default()
    }
}

fn holds(h: &Holder) -> &'static str {
    match h {
        Holder::Nobody => "nobody",
        Holder::Us => "us",
        Holder::Retained(_) => "retained",
        Holder::Other(_) => "other",
    }
}

#[test]
fn who_holds_the_namespace() {
    let c = customer("ledger", "uid-now");
    let someone_elses = ObjectMeta {
        labels: Some([("team".to_owned(), "x".to_owned())].into()),
        ..ObjectMeta::default()
    };
    let cases = [
        ("absent", None, "nobody"),
        (
            "owned (Delete)",
            Some(tenant_ns("ledger", &["uid-now"], Some("uid-now"))),
            "us",
        ),
        (
            "recorded, unowned (Retain)",
            Some(tenant_ns("ledger", &[], Some("uid-now"))),
            "us",
        ),
        (
            "owned by an older version, no record",
            Some(tenant_ns("ledger", &["uid-now"], None)),
            "us",
        ),
        (
            "left by an earlier ledger",
            Some(tenant_ns("ledger", &[], Some("uid-old"))),
            "retained",
        ),
        (
            "left by an earlier ledger, no record",
            Some(tenant_ns("ledger", &[], None)),
            "retained",
        ),
        (
            "owned by another Customer",
            Some(tenant_ns("ledger", &["uid-old"], Some("uid-old"))),
            "other",
        ),
        (
            "another tenant's",
            Some(tenant_ns("payroll", &[], Some("uid-p"))),
            "other",
        ),
        ("not berth's", Some(someone_elses), "other"),
    ];
    for (what, ns, expected) in cases {
        assert_eq!(holds(&holder(&c, ns.as_ref())), expected, "{what}");
    }
}

#[test]
fn a_conflict_says_whose_namespace_it_is() {
    let c = customer("ledger", "uid-now");
    let Holder::Other(why) = holder(&c, Some(&tenant_ns("payroll", &[], None))) else {
        panic!("not a conflict");
    };
    assert_eq!(
        why,
        "namespace ledger already exists and belongs to Customer payroll; berth leaves it untouched"
    );
    let Holder::Other(why) = holder(&c, Some(&ObjectMeta::default())) else {
        panic!("not a conflict");
    };
    assert!(why.contains("is not managed by berth"), "{why}");
}

#[test]
fn a_retained_namespace_says_whom_it_was_kept_for() {
    let c = customer("ledger", "uid-now");
    let recorded = |ns: ObjectMeta| match holder(&c, Some(&ns)) {
        Holder::Retained(uid) => uid,
        _ => panic!("not retained"),
    };
    assert_eq!(
        recorded(tenant_ns("ledger", &[], Some("uid-old"))).as_deref(),
        Some("uid-old")
    );
    assert_eq!(recorded(tenant_ns("ledger", &[], None)), None);
}

/// `ledger`, taking over the namespace of `adopt` if given.
fn adopting(adopt: Option<&str>) -> Customer {
    let mut c = customer("ledger", "uid-now");
    c.spec.adopt_namespace_of = adopt.map(str::to_owned);
    c
}

fn stands(s: &Standing) -> String {
    match s {
        Standing::Free => "free".to_owned(),
        Standing::Created(_) => "created".to_owned(),
        Standing::Ours => "ours".to_owned(),
        Standing::Adopt(uid) => format!("adopt {uid}"),
        Standing::Refused { reason, .. } => format!("refused {reason}"),
    }
}

#[test]
fn only_a_customer_that_names_the_recorded_uid_takes_a_retained_namespace_over() {
    let retained = || Holder::Retained(Some("uid-old".to_owned()));
    let cases = [
        ("free", None, Holder::Nobody, "free"),
        ("free, opted in anyway", Some("uid-old"), Holder::Nobody, "free"),
        ("ours", None, Holder::Us, "ours"),
        (
            "ours, still opted in after adopting",
            Some("uid-old"),
            Holder::Us,
            "ours",
        ),
        (
            "retained, not asked",
            None,
            retained(),
            "refused RetainedNamespace",
        ),
        (
            "retained, asked by UID",
            Some("uid-old"),
            retained(),
            "adopt uid-old",
        ),
        (
            "retained, another UID asked",
            Some("uid-else"),
            retained(),
            "refused RetainedNamespace",
        ),
        (
            "retained, recorded by nobody, asked anything",
            Some("uid-old"),
            Holder::Retained(None),
            "refused RetainedNamespace",
        ),
        (
            "someone else's, opted in",
            Some("uid-old"),
            Holder::Other("theirs".to_owned()),
            "refused NameConflict",
        ),
    ];
    for (what, adopt, holder, expected) in cases {
        assert_eq!(stands(&standing(&adopting(adopt), holder)), expected, "{what}");
    }
}

fn refusal(s: Standing) -> String {
    match s {
        Standing::Refused { message, .. } => message,
        other => panic!("not refused: {}", stands(&other)),
    }
}

#[test]
fn a_refused_retained_namespace_says_how_to_take_it_over() {
    let retained = || Holder::Retained(Some("uid-old".to_owned()));
    assert_eq!(
        refusal(standing(&adopting(None), retained())),
        "namespace ledger was kept with its data (deletionPolicy: Retain) by an earlier Customer ledger \
         with UID uid-old; berth leaves it untouched: set spec.adoptNamespaceOf: uid-old to take it over \
         with its data, or re-create this Customer with another spec.namespace"
    );
    let wrong = refusal(standing(&adopting(Some("uid-else")), retained()));
    assert!(wrong.contains("with UID uid-old, not uid-else;"), "{wrong}");
    assert!(wrong.contains("set spec.adoptNamespaceOf: uid-old "), "{wrong}");
    let unrecorded = refusal(standing(&adopting(None), Holder::Retained(None)));
    assert!(
        unrecorded.contains("run `kubectl annotate namespace ledger berth.dev/customer-uid=uid-now`"),
        "{unrecorded}"
    );
}

#[test]
fn a_conflict_keeps_its_message() {
    let why = "namespace ledger already exists and is not managed by berth".to_owned();
    assert_eq!(
        refusal(standing(&adopting(None), Holder::Other(why.clone()))),
        why
    );
}

fn policy(rules: Option<usize>) -> NetworkPolicy {
    NetworkPolicy {
        spec: Some(NetworkPolicySpec {
            ingress: rules.map(|n| vec![NetworkPolicyIngressRule::default(); n]),
            ..NetworkPolicySpec::default()
        }),
        ..NetworkPolicy::default()
    }
}

#[test]
fn only_rules_someone_added_to_a_rule_free_policy_are_foreign() {
    let deny = policy(None);
    let allow = policy(Some(1));
    assert!(foreign_rules(&deny, Some(&policy(Some(2)))), "added by hand");
    assert!(
        !foreign_rules(&deny, Some(&policy(Some(0)))),
        "an empty list is no rule"
    );
    assert!(!foreign_rules(&deny, Some(&deny)));
    assert!(!foreign_rules(&deny, None), "not cached yet: nothing to remove");
    assert!(
        !foreign_rules(&allow, Some(&policy(Some(3)))),
        "berth's own rules are applied, not removed"
    );
}
