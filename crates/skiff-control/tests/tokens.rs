//! API tokens through the control plane over a real store: made once with their text
//! shown then only, checked by the hash of their secret, refused when revoked, forged,
//! malformed or unknown, and limited to their services.

mod fake;

use fake::Harness;
use skiff_control::tokens::{AuthError, TokenAnswer, TokenCommand};
use skiff_core::{ApiAction, Role};

async fn create(h: &Harness, name: &str, role: Role, services: &[&str]) -> String {
    let answer = h
        .ctl
        .execute_token(TokenCommand::Create {
            name: name.into(),
            role,
            services: services.iter().map(|s| s.to_string()).collect(),
        })
        .await
        .unwrap();
    let TokenAnswer::Created(made) = answer else {
        panic!()
    };
    assert!(
        !format!("{made:?}").contains(&made.token),
        "Debug shows the token"
    );
    made.token
}

#[tokio::test]
async fn a_token_authenticates_until_revoked_and_forgeries_never() {
    let h = Harness::new();
    let token = create(&h, "ci", Role::Developer, &["api"]).await;
    let who = h.ctl.authenticate(&token).unwrap();
    assert_eq!(who.name, "ci");
    assert!(who.grant.allows(ApiAction::Deploy, Some("api")));
    assert!(!who.grant.allows(ApiAction::ReadLogs, Some("other")));
    assert!(!who.grant.allows(ApiAction::WriteSecrets, None));

    // The store has the hash only.
    let db = std::fs::read(h.home().join("skiff.db")).unwrap();
    let secret = token.rsplit('_').next().unwrap();
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()));

    // The same id with another secret, another id, garbage.
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert!(matches!(
        h.ctl.authenticate(&forged),
        Err(AuthError::Mismatch(_))
    ));
    let unknown = format!("skiff_000000000000_{secret}");
    assert!(matches!(
        h.ctl.authenticate(&unknown),
        Err(AuthError::Unknown(_))
    ));
    assert_eq!(h.ctl.authenticate("hunter2"), Err(AuthError::Malformed));

    let taken = h
        .ctl
        .execute_token(TokenCommand::Create {
            name: "ci".into(),
            role: Role::Viewer,
            services: vec![],
        })
        .await
        .unwrap_err();
    assert!(taken.to_string().contains("named ci already"), "{taken}");

    h.ctl
        .execute_token(TokenCommand::Revoke { name: "ci".into() })
        .await
        .unwrap();
    assert!(matches!(
        h.ctl.authenticate(&token),
        Err(AuthError::Revoked(_))
    ));
    let TokenAnswer::Tokens(list) = h.ctl.execute_token(TokenCommand::List).await.unwrap() else {
        panic!()
    };
    assert_eq!(list.len(), 1);
    assert!(list[0].revoked_at.is_some());
}
