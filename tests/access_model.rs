//! A model-based property test of who may see what (issue 13): random sequences of configure,
//! affiliate, subscribe, approve, publish, retract, purge, roster changes and reads run against
//! the pubsub core (memory store) and against the small reference model below, and after every
//! step no item, event or node data reached an entity the model says may not read the node at
//! that moment, and every read is allowed exactly when the model allows it.
//!
//! The reference model is a transcription of XEP-0060, to be held against it:
//! - 4.1, Table 4: owners, publishers and members retrieve items; publish-only and outcast
//!   entities do not; for entities without an affiliation the access model decides.
//! - 4.5: open lets anyone read; presence, whoever the owner's roster gives a presence
//!   subscription (from or both); roster, whoever the roster puts in an allowed group;
//!   authorize, whoever the owner approved; whitelist, nobody without an affiliation.
//! - 6.1.3.3 / 8.6: under authorize, a subscription of an entity without an affiliation is
//!   pending until an owner approves it.
//!
//! - XEP-0163 section 4 (PEP): the same sequences also run on the owner's PEP service, where the
//!   online resources of contacts that receive the owner's presence and whose caps ask
//!   `n+notify` are implicit recipients: each must get node events exactly when it may read.
//!
//! The test command runs 3,000 sequences (about 10 s); `STRATUS_PROPTEST_CASES=20000 cargo test
//! --test access_model` runs a longer search.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use proptest::prelude::*;
use stratus::jid::{BareJid, Jid};
use stratus::pubsub::access::RosterRelation;
use stratus::pubsub::model::{AccessModel, Affiliation, ServiceId, SubOptions, SubscriptionState};
use stratus::pubsub::notify::{Event, Notification};
use stratus::pubsub::service::{Contact, RosterSource};
use stratus::pubsub::{ItemSelection, Limits, PubSub};
use stratus::storage::memory::MemoryStore;

const OWNER: &str = "owner@h";
const NODE: &str = "n";
const GROUP: &str = "friends";
/// The entities besides the owner; each may act from its bare JID or a full one.
const PEOPLE: [&str; 3] = ["a@h", "b@h", "c@remote.example"];

// ---- the reference model ----

#[derive(Debug, Clone, Default)]
struct RosterEntry {
    presence: bool,
    in_group: bool,
}

#[derive(Debug, Clone)]
struct Model {
    access: AccessModel,
    affiliations: HashMap<String, Affiliation>,
    /// Subscriptions by the JID they were made for (bare or full): approved, or pending.
    subscriptions: HashMap<String, bool>,
    roster: HashMap<String, RosterEntry>,
}

fn bare_of(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

impl Model {
    /// Affiliations belong to bare JIDs (XEP-0060 4.1).
    fn affiliation(&self, jid: &str) -> Affiliation {
        let bare = bare_of(jid);
        if bare == OWNER {
            return Affiliation::Owner;
        }
        self.affiliations
            .get(bare)
            .copied()
            .unwrap_or(Affiliation::None)
    }

    /// Table 4: what the affiliation decides alone (None: the access model decides).
    fn by_affiliation(&self, jid: &str) -> Option<bool> {
        match self.affiliation(jid) {
            Affiliation::Owner | Affiliation::Publisher | Affiliation::Member => Some(true),
            Affiliation::PublishOnly | Affiliation::Outcast => Some(false),
            Affiliation::None => None,
        }
    }

    fn approved(&self, jid: &str) -> bool {
        self.subscriptions.get(jid) == Some(&true)
            || self.subscriptions.get(bare_of(jid)) == Some(&true)
    }

    /// 4.1 Table 4, then 4.5: may `jid` retrieve the node's items now?
    fn may_read(&self, jid: &str) -> bool {
        self.by_affiliation(jid).unwrap_or_else(|| {
            let roster = self.roster.get(bare_of(jid));
            match self.access {
                AccessModel::Open => true,
                AccessModel::Presence => roster.is_some_and(|r| r.presence),
                AccessModel::Roster => roster.is_some_and(|r| r.in_group),
                AccessModel::Authorize => self.approved(jid),
                AccessModel::Whitelist => false,
            }
        })
    }

    /// 6.1.3: may `jid` ask to subscribe (under authorize anyone may ask)?
    fn may_subscribe(&self, jid: &str) -> bool {
        self.access == AccessModel::Authorize && self.by_affiliation(jid).is_none()
            || self.may_read(jid)
    }

    /// 8.2 and 8.9: after a change of access model or affiliations, a subscription ends when its
    /// holder's affiliation forbids reading, or when a whitelist leaves it out. (Under the roster
    /// models it stays: deliveries are checked one by one.)
    fn end_unreadable(&mut self) {
        let snapshot = self.clone();
        self.subscriptions.retain(|jid, _| {
            snapshot
                .by_affiliation(jid)
                .unwrap_or(snapshot.access != AccessModel::Whitelist)
        });
    }
}

// ---- the roster the core reads: the model's ----

struct ModelRoster {
    roster: Arc<Mutex<HashMap<String, RosterEntry>>>,
    /// Bare JIDs whose resource `/r` is online with caps asking `n+notify`.
    online: Arc<Mutex<HashSet<String>>>,
}

#[async_trait]
impl RosterSource for ModelRoster {
    async fn relation(
        &self,
        _svc: &ServiceId,
        owners: &[BareJid],
        actor: &BareJid,
    ) -> RosterRelation {
        // Only the owner's roster exists in this model.
        if !owners.iter().any(|o| o.to_string() == OWNER) {
            return RosterRelation::default();
        }
        let roster = self.roster.lock().unwrap();
        match roster.get(actor.as_str()) {
            Some(e) => RosterRelation {
                presence_subscribed: e.presence,
                groups: if e.in_group {
                    vec![GROUP.into()]
                } else {
                    Vec::new()
                },
            },
            None => RosterRelation::default(),
        }
    }

    async fn contacts(&self, account: &BareJid) -> Vec<Contact> {
        if account.as_str() != OWNER {
            return Vec::new();
        }
        let roster = self.roster.lock().unwrap();
        roster
            .iter()
            .map(|(jid, e)| Contact {
                jid: BareJid::parse(jid).unwrap(),
                from: e.presence,
                to: false,
            })
            .collect()
    }

    fn notify_resources(&self, account: &BareJid, node: &str) -> Vec<Jid> {
        if node != NODE || !self.online.lock().unwrap().contains(account.as_str()) {
            return Vec::new();
        }
        vec![Jid::parse(&format!("{account}/r")).unwrap()]
    }
}

// ---- operations ----

#[derive(Debug, Clone)]
enum Op {
    Configure(AccessModel),
    Affiliate(usize, Affiliation),
    Subscribe(usize, bool),
    Approve(usize),
    Publish,
    Retract,
    Purge,
    Roster(usize, bool, bool),
    Read(usize, bool),
    /// A resource of the person comes online with `n+notify` in its caps, or goes offline.
    Online(usize, bool),
}

fn access_model() -> impl Strategy<Value = AccessModel> {
    prop::sample::select(vec![
        AccessModel::Open,
        AccessModel::Presence,
        AccessModel::Roster,
        AccessModel::Authorize,
        AccessModel::Whitelist,
    ])
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0..PEOPLE.len();
    prop_oneof![
        access_model().prop_map(Op::Configure),
        (
            who.clone(),
            prop::sample::select(vec![
                Affiliation::Publisher,
                Affiliation::PublishOnly,
                Affiliation::Member,
                Affiliation::None,
                Affiliation::Outcast,
            ])
        )
            .prop_map(|(w, a)| Op::Affiliate(w, a)),
        (who.clone(), any::<bool>()).prop_map(|(w, full)| Op::Subscribe(w, full)),
        who.clone().prop_map(Op::Approve),
        Just(Op::Publish),
        Just(Op::Retract),
        Just(Op::Purge),
        (who.clone(), any::<bool>(), any::<bool>()).prop_map(|(w, p, g)| Op::Roster(w, p, g)),
        (who.clone(), any::<bool>()).prop_map(|(w, full)| Op::Read(w, full)),
        (who, any::<bool>()).prop_map(|(w, on)| Op::Online(w, on)),
    ]
}

fn jid(who: usize, full: bool) -> Jid {
    let bare = PEOPLE[who];
    Jid::parse(&if full {
        format!("{bare}/r")
    } else {
        bare.to_owned()
    })
    .unwrap()
}

/// No notification carrying node data reaches anyone the model does not let read the node now.
fn check_deliveries(
    model: &Model,
    notes: &[Notification],
    step: &str,
) -> Result<(), TestCaseError> {
    for n in notes {
        let carries_node_data = matches!(
            n.event,
            Event::Items { .. }
                | Event::Retract { .. }
                | Event::Purge
                | Event::Delete { .. }
                | Event::Configuration { .. }
        );
        if !carries_node_data {
            continue;
        }
        for r in &n.recipients {
            prop_assert!(
                model.may_read(&r.jid.to_string()),
                "{step}: {:?} delivered to {} whom the model refuses ({model:?})",
                n.event,
                r.jid
            );
        }
    }
    Ok(())
}

async fn run(ops: Vec<Op>, first: AccessModel, pep: bool) -> Result<(), TestCaseError> {
    let roster = Arc::new(Mutex::new(HashMap::new()));
    let online = Arc::new(Mutex::new(HashSet::new()));
    let ps = PubSub::new(
        Arc::new(MemoryStore::default()),
        Limits::default(),
        Arc::new(ModelRoster {
            roster: roster.clone(),
            online: online.clone(),
        }),
    );
    let svc = if pep {
        ServiceId::Pep(BareJid::parse(OWNER).unwrap())
    } else {
        ServiceId::Host
    };
    let owner = Jid::parse(&format!("{OWNER}/o")).unwrap();
    let mut cfg = ps.default_config(&svc);
    cfg.access_model = first;
    cfg.roster_groups_allowed = vec![GROUP.into()];
    ps.create(&svc, &owner, Some(NODE), Some(cfg))
        .await
        .unwrap();
    let mut model = Model {
        access: first,
        affiliations: HashMap::new(),
        subscriptions: HashMap::new(),
        roster: HashMap::new(),
    };
    let mut published: Vec<String> = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        let step = format!("step {i} {op:?}");
        match op {
            Op::Configure(access) => {
                let mut c = ps.get_config(&svc, &owner, NODE).await.unwrap();
                c.access_model = access;
                let notes = ps.set_config(&svc, &owner, NODE, c).await.unwrap();
                model.access = access;
                model.end_unreadable();
                check_deliveries(&model, &notes, &step)?;
            }
            Op::Affiliate(w, aff) => {
                let notes = ps
                    .set_node_affiliations(&svc, &owner, NODE, vec![(jid(w, false).to_bare(), aff)])
                    .await
                    .unwrap();
                model.affiliations.insert(PEOPLE[w].into(), aff);
                model.end_unreadable();
                check_deliveries(&model, &notes, &step)?;
            }
            Op::Subscribe(w, full) => {
                let who = jid(w, full);
                let key = who.to_string();
                let existing = model.subscriptions.get(&key).copied();
                let got = ps
                    .subscribe(&svc, &who, NODE, &who, SubOptions::default())
                    .await;
                match (got, existing) {
                    // 6.1.3.3: an entity without affiliation waits for approval under authorize.
                    (Ok(s), None) => {
                        prop_assert!(
                            model.may_subscribe(&key),
                            "{step}: subscribed against the model"
                        );
                        let pending = s.subscription.state == SubscriptionState::Pending;
                        let wait = model.access == AccessModel::Authorize
                            && model.by_affiliation(&key).is_none();
                        prop_assert_eq!(pending, wait, "{}: pending or not", step);
                        model.subscriptions.insert(key, !pending);
                        check_deliveries(&model, &s.notifications, &step)?;
                    }
                    (Ok(s), Some(approved)) => {
                        prop_assert!(approved, "{step}: a pending subscription answered as made");
                        check_deliveries(&model, &s.notifications, &step)?;
                    }
                    (Err(e), existing) => prop_assert!(
                        existing == Some(false) || !model.may_subscribe(&key),
                        "{step}: refused ({e:?}) though the model allows it ({model:?})"
                    ),
                }
            }
            Op::Approve(w) => {
                // 8.8.2: the owner sets the subscription of the bare JID to subscribed.
                let who = jid(w, false);
                let notes = ps
                    .set_node_subscriptions(
                        &svc,
                        &owner,
                        NODE,
                        vec![(who.clone(), Some(SubscriptionState::Subscribed), None)],
                    )
                    .await
                    .unwrap();
                model.subscriptions.insert(who.to_string(), true);
                check_deliveries(&model, &notes, &step)?;
            }
            Op::Publish => {
                let id = format!("i{i}");
                let (_, notes) = ps
                    .publish(
                        &svc,
                        &owner,
                        NODE,
                        vec![(Some(id.clone()), "<e xmlns='urn:e'/>".into())],
                    )
                    .await
                    .unwrap();
                published.push(id);
                check_deliveries(&model, &notes, &step)?;
                if pep {
                    // XEP-0163 section 4: every online contact asking `n+notify` that receives
                    // the owner's presence and may read the node gets the item.
                    let got: HashSet<String> = notes
                        .iter()
                        .flat_map(|n| n.recipients.iter().map(|r| r.jid.to_string()))
                        .collect();
                    for who in online.lock().unwrap().iter() {
                        let resource = format!("{who}/r");
                        let contact = model.roster.get(who).is_some_and(|e| e.presence);
                        if contact && model.may_read(&resource) {
                            prop_assert!(
                                got.contains(&resource),
                                "{step}: {resource} asks +notify, may read, got nothing ({model:?})"
                            );
                        }
                    }
                }
            }
            Op::Retract => {
                let Some(id) = published.pop() else { continue };
                // The item may have been trimmed by max_items already.
                if let Ok(notes) = ps.retract(&svc, &owner, NODE, vec![id], Some(true)).await {
                    check_deliveries(&model, &notes, &step)?;
                }
            }
            Op::Purge => {
                let notes = ps.purge(&svc, &owner, NODE).await.unwrap();
                published.clear();
                check_deliveries(&model, &notes, &step)?;
            }
            Op::Roster(w, presence, in_group) => {
                let e = RosterEntry { presence, in_group };
                roster
                    .lock()
                    .unwrap()
                    .insert(PEOPLE[w].to_owned(), e.clone());
                model.roster.insert(PEOPLE[w].to_owned(), e);
            }
            Op::Online(w, on) => {
                let mut online = online.lock().unwrap();
                if on {
                    online.insert(PEOPLE[w].to_owned());
                } else {
                    online.remove(PEOPLE[w]);
                }
            }
            Op::Read(w, full) => {
                let who = jid(w, full);
                let got = ps
                    .items(&svc, &who, NODE, ItemSelection::Newest(None))
                    .await;
                prop_assert_eq!(
                    got.is_ok(),
                    model.may_read(&who.to_string()),
                    "{}: the core and the model disagree on a read by {} ({:?})",
                    step,
                    who,
                    model
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("STRATUS_PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(3000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_delivery_or_read_the_model_refuses(
        first in access_model(),
        ops in prop::collection::vec(op(), 1..40),
        pep in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops, first, pep))?;
    }
}
