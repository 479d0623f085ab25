//! Authentication and authorization through the real router over real
//! HTTP, on PostgreSQL and SQLite (SPEC §3): missing, garbage, foreign and
//! expired tokens (401), a role outside an endpoint's column (403, whatever
//! the body), another tenant's account (404), and the whole role × tenant
//! matrix.

mod common;

use std::time::Duration;

use api::auth::{Claims, JwtKeys, Role};
use common::{key, now_unix, random_account, unique_slug, Api};
use reqwest::Method;
use serde_json::{json, Value};

async fn missing_garbage_foreign_and_expired_tokens_are_401(api: &Api) {
    let (id, p) = api.funded_account(10).await;
    let paths = [
        (Method::GET, format!("/v1/accounts/{id}/balance"), None),
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions"),
            Some(json!({ "operation": "clustering" }).to_string()),
        ),
        (Method::GET, "/v1/plans".to_owned(), None),
        (Method::GET, "/v1/admin/accounts".to_owned(), None),
        (Method::GET, "/v1/billing/account_balance/".to_owned(), None),
    ];
    let expired = api.keys.mint(&Claims {
        sub: "late".into(),
        role: Role::Developer,
        account_id: None,
        exp: now_unix() - 3600,
        iat: now_unix() - 7200,
        jti: None,
    });
    let other_secret = JwtKeys::from_secret(b"another-secret-another-secret-0123456789").mint(
        &Claims::new(
            "x",
            Role::Developer,
            None,
            now_unix(),
            Duration::from_secs(600),
        )
        .unwrap(),
    );
    let owner_without_account = api.keys.mint(&Claims {
        sub: "o".into(),
        role: Role::Owner,
        account_id: None,
        exp: now_unix() + 600,
        iat: now_unix(),
        jti: None,
    });
    for (method, path, body) in paths {
        let r = api
            .send(method.clone(), &path, None, Some(&key()), body.clone())
            .await;
        r.expect_error(401, "unauthorized");
        for auth in [
            "Bearer garbage".to_owned(),
            "Bearer ".to_owned(),
            "Basic dXNlcjpwYXNz".to_owned(),
            api.developer(),
            format!("Bearer {expired}"),
            format!("Bearer {other_secret}"),
            format!("Bearer {owner_without_account}"),
        ] {
            let mut req = api
                .http
                .request(method.clone(), api.url(&path))
                .header("Idempotency-Key", key());
            req = req.header("Authorization", auth.clone());
            if let Some(b) = &body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.clone());
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            assert_eq!(status, 401, "{method} {path} with {auth:.20}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    // None of the refused deductions went through.
    assert_eq!(api.balance(&id, p).await["balance"], 10);
}
on_both_backends!(missing_garbage_foreign_and_expired_tokens_are_401);

async fn a_role_outside_the_endpoints_column_is_403(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let d = api.deduct(&id, json!({ "operation": "clustering" })).await;
    let deduction = d.expect(201)["id"].as_str().unwrap().to_owned();
    let cases: Vec<(Method, String, String, Option<Value>)> = vec![
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions"),
            api.viewer(&id),
            Some(json!({ "operation": "clustering" })),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions"),
            api.owner(&id),
            Some(json!({ "operation": "clustering" })),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/holds"),
            api.admin(&id),
            Some(json!({ "credits": 1 })),
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{id}"),
            api.owner(&id),
            Some(json!({ "credit_limit": 1000 })),
        ),
        (
            Method::PATCH,
            "/v1/account/settings/".to_owned(),
            api.admin(&id),
            Some(json!({ "credit_limit": 1000 })),
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{id}"),
            api.editor(&id),
            Some(json!({ "name": "x" })),
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{id}"),
            api.bot(Some(&id)),
            Some(json!({ "name": "x" })),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions/{deduction}/refund"),
            api.owner(&id),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions/{deduction}/refund"),
            api.bot(Some(&id)),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/grants"),
            api.owner(&id),
            Some(json!({ "credits": 5, "source": "purchase" })),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/grants"),
            api.bot(None),
            Some(json!({ "credits": 5, "source": "purchase" })),
        ),
        (
            Method::POST,
            format!("/v1/admin/accounts/{id}/adjust-credits"),
            api.admin(&id),
            Some(json!({ "credits": 5, "reason": "x" })),
        ),
        (
            Method::POST,
            format!("/v1/admin/accounts/{id}/suspend"),
            api.admin(&id),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/v1/accounts".to_owned(),
            api.owner(&id),
            Some(Api::account_body(&unique_slug())),
        ),
        (
            Method::GET,
            "/v1/admin/accounts".to_owned(),
            api.owner(&id),
            None,
        ),
        (
            Method::GET,
            "/v1/admin/credit-costs".to_owned(),
            api.bot(None),
            None,
        ),
        (
            Method::GET,
            "/v1/admin/credit-costs/history".to_owned(),
            api.admin(&id),
            None,
        ),
        (
            Method::PUT,
            "/v1/admin/plans/free".to_owned(),
            api.admin(&id),
            Some(json!({
                "name": "Free for all",
                "price": { "amount": "0.00", "currency": "USD" },
                "billing_cycle": "monthly",
                "included_credits": 1000000,
            })),
        ),
        (
            Method::PUT,
            "/v1/admin/credit-packages/pro".to_owned(),
            api.viewer(&id),
            Some(json!({
                "name": "Pro",
                "credits": 1000000,
                "price": { "amount": "0.01", "currency": "USD" },
            })),
        ),
        (
            Method::PUT,
            "/v1/admin/credit-costs/clustering".to_owned(),
            api.bot(None),
            Some(json!({ "cost": 1, "unit": "per_request" })),
        ),
        (
            Method::GET,
            format!("/v1/accounts/{id}/transactions"),
            api.bot(Some(&id)),
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{id}/usage"),
            api.bot(None),
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{id}"),
            api.bot(Some(&id)),
            None,
        ),
    ];
    for (method, path, token, body) in cases {
        let r = api
            .send(
                method.clone(),
                &path,
                Some(&token),
                Some(&key()),
                body.map(|b| b.to_string()),
            )
            .await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text);
        r.expect_error(403, "forbidden");
    }
    let b = api.balance(&id, d.position()).await;
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64()),
        (Some(90), Some(0))
    );
    let a = api
        .get(
            &format!("/v1/accounts/{id}?min_position={}", d.position()),
            &api.developer(),
        )
        .await;
    assert_eq!(a.expect(200)["credit_limit"], 0);
    assert_eq!(a.body["status"], "active");
}
on_both_backends!(a_role_outside_the_endpoints_column_is_403);

async fn a_role_outside_the_endpoints_column_is_403_whatever_the_body(api: &Api) {
    let id = api.open_account().await;
    // A caller that may not call an endpoint learns nothing of its schema.
    for (method, path, token) in [
        (
            Method::PUT,
            "/v1/admin/plans/free".to_owned(),
            api.admin(&id),
        ),
        (
            Method::PUT,
            "/v1/admin/credit-packages/pro".to_owned(),
            api.viewer(&id),
        ),
        (
            Method::PUT,
            "/v1/admin/credit-costs/clustering".to_owned(),
            api.owner(&id),
        ),
        (Method::POST, "/v1/accounts".to_owned(), api.owner(&id)),
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions"),
            api.viewer(&id),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/grants"),
            api.bot(Some(&id)),
        ),
    ] {
        let r = api
            .send(
                method.clone(),
                &path,
                Some(&token),
                Some(&key()),
                Some("{}".into()),
            )
            .await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text);
        r.expect_error(403, "forbidden");
    }
}
on_both_backends!(a_role_outside_the_endpoints_column_is_403_whatever_the_body);

async fn another_tenants_account_is_404_on_every_account_scoped_route(api: &Api) {
    let (mine, _) = api.funded_account(100).await;
    let (theirs, _) = api.funded_account(100).await;
    let h = api.hold(&theirs, json!({ "credits": 5 })).await;
    let their_hold = h.expect(201)["id"].as_str().unwrap().to_owned();
    let d = api
        .deduct(&theirs, json!({ "operation": "clustering" }))
        .await;
    d.expect(201);
    let p = d.position();

    // Each route with a role it allows, scoped to `mine` (refunds of usage
    // have none: they are the platform's).
    let routes = |account: &str| -> Vec<(Method, String, String, Option<Value>)> {
        vec![
            (
                Method::GET,
                format!("/v1/accounts/{account}"),
                api.owner(&mine),
                None,
            ),
            (
                Method::PATCH,
                format!("/v1/accounts/{account}"),
                api.owner(&mine),
                Some(json!({ "name": "taken over" })),
            ),
            (
                Method::GET,
                format!("/v1/accounts/{account}/limits"),
                api.viewer(&mine),
                None,
            ),
            (
                Method::POST,
                format!("/v1/accounts/{account}/deductions"),
                api.bot(Some(&mine)),
                Some(json!({ "operation": "clustering" })),
            ),
            (
                Method::POST,
                format!("/v1/accounts/{account}/holds"),
                api.bot(Some(&mine)),
                Some(json!({ "credits": 1 })),
            ),
            (
                Method::POST,
                format!("/v1/accounts/{account}/holds/{their_hold}/capture"),
                api.bot(Some(&mine)),
                Some(json!({})),
            ),
            (
                Method::POST,
                format!("/v1/accounts/{account}/holds/{their_hold}/release"),
                api.bot(Some(&mine)),
                Some(json!({})),
            ),
            (
                Method::GET,
                format!("/v1/accounts/{account}/balance"),
                api.viewer(&mine),
                None,
            ),
            (
                Method::GET,
                format!("/v1/accounts/{account}/balance"),
                api.bot(Some(&mine)),
                None,
            ),
            (
                Method::GET,
                format!("/v1/accounts/{account}/transactions"),
                api.editor(&mine),
                None,
            ),
            (
                Method::GET,
                format!("/v1/accounts/{account}/usage"),
                api.viewer(&mine),
                None,
            ),
            (
                Method::GET,
                format!("/v1/accounts/{account}/usage/analytics"),
                api.owner(&mine),
                None,
            ),
        ]
    };
    let missing = random_account();
    for ((method, path, token, body), (_, missing_path, _, _)) in
        routes(&theirs).into_iter().zip(routes(&missing))
    {
        let send = |path: String| {
            let (method, token, body) = (method.clone(), token.clone(), body.clone());
            async move {
                api.send(
                    method,
                    &path,
                    Some(&token),
                    Some(&key()),
                    body.map(|b| b.to_string()),
                )
                .await
            }
        };
        let theirs_r = send(path.clone()).await;
        assert_eq!(theirs_r.status, 404, "{method} {path}: {}", theirs_r.text);
        theirs_r.expect_error(404, "not_found");
        // Exactly as a missing account: existence does not leak.
        let missing_r = send(missing_path).await;
        assert_eq!(
            theirs_r.text, missing_r.text,
            "{method} {path}: another tenant's account answers like a missing one"
        );
    }
    // Their account is untouched.
    let b = api.balance(&theirs, p).await;
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64()),
        (Some(90), Some(5))
    );
    let a = api
        .get(
            &format!("/v1/accounts/{theirs}?min_position={p}"),
            &api.developer(),
        )
        .await;
    assert_ne!(a.expect(200)["name"], "taken over");
    let b = api.balance(&mine, p).await;
    assert_eq!(b["balance"], 100);
}
on_both_backends!(another_tenants_account_is_404_on_every_account_scoped_route);

// ---------------------------------------------------------------------------
// The role × tenant matrix
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Developer,
    Owner,
    Admin,
    Editor,
    Viewer,
    BotScoped,
    BotUnscoped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Read,
    Balance,
    Deduct,
    Hold,
    Refund,
    Grant,
    Adjust,
    Admin,
}

impl Class {
    const ALL: [Class; 8] = [
        Class::Read,
        Class::Balance,
        Class::Deduct,
        Class::Hold,
        Class::Refund,
        Class::Grant,
        Class::Adjust,
        Class::Admin,
    ];

    /// SPEC §3's role column.
    fn allows(self, who: Who) -> bool {
        use Who::*;
        match self {
            Class::Read => matches!(who, Developer | Owner | Admin | Editor | Viewer),
            Class::Balance => true,
            Class::Deduct | Class::Hold => matches!(who, Developer | BotScoped | BotUnscoped),
            Class::Refund => matches!(who, Developer),
            Class::Grant | Class::Adjust | Class::Admin => who == Developer,
        }
    }

    fn success(self) -> u16 {
        match self {
            Class::Read | Class::Balance | Class::Admin => 200,
            _ => 201,
        }
    }
}

fn expected(who: Who, class: Class, own: bool) -> u16 {
    if !class.allows(who) {
        403
    } else if own || matches!(who, Who::Developer | Who::BotUnscoped) {
        class.success()
    } else {
        404
    }
}

async fn every_role_gets_the_spec_status_on_its_own_and_another_tenants_account(api: &Api) {
    let (mine, _) = api.funded_account(10_000).await;
    let (theirs, _) = api.funded_account(10_000).await;
    let mut deduction_of = std::collections::HashMap::new();
    for account in [&mine, &theirs] {
        let d = api
            .deduct(account, json!({ "operation": "site_structure" }))
            .await;
        deduction_of.insert(
            account.clone(),
            d.expect(201)["id"].as_str().unwrap().to_owned(),
        );
        // The reads below need the account in the read models.
        api.balance(account, d.position()).await;
    }
    let token = |who: Who| match who {
        Who::Developer => api.developer(),
        Who::Owner => api.owner(&mine),
        Who::Admin => api.admin(&mine),
        Who::Editor => api.editor(&mine),
        Who::Viewer => api.viewer(&mine),
        Who::BotScoped => api.bot(Some(&mine)),
        Who::BotUnscoped => api.bot(None),
    };
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for who in [
        Who::Developer,
        Who::Owner,
        Who::Admin,
        Who::Editor,
        Who::Viewer,
        Who::BotScoped,
        Who::BotUnscoped,
    ] {
        for class in Class::ALL {
            for own in [true, false] {
                let account = if own { &mine } else { &theirs };
                let (method, path, body) = match class {
                    Class::Read => (
                        Method::GET,
                        format!("/v1/accounts/{account}/transactions"),
                        None,
                    ),
                    Class::Balance => {
                        (Method::GET, format!("/v1/accounts/{account}/balance"), None)
                    }
                    Class::Deduct => (
                        Method::POST,
                        format!("/v1/accounts/{account}/deductions"),
                        Some(json!({ "operation": "content_generation", "units": 1 })),
                    ),
                    Class::Hold => (
                        Method::POST,
                        format!("/v1/accounts/{account}/holds"),
                        Some(json!({ "credits": 1 })),
                    ),
                    Class::Refund => (
                        Method::POST,
                        format!(
                            "/v1/accounts/{account}/deductions/{}/refund",
                            deduction_of[account]
                        ),
                        Some(json!({ "credits": 1 })),
                    ),
                    Class::Grant => (
                        Method::POST,
                        format!("/v1/accounts/{account}/grants"),
                        Some(json!({ "credits": 1, "source": "promotional" })),
                    ),
                    Class::Adjust => (
                        Method::POST,
                        format!("/v1/admin/accounts/{account}/adjust-credits"),
                        Some(json!({ "credits": 1, "reason": "matrix" })),
                    ),
                    Class::Admin => (
                        Method::POST,
                        format!("/v1/admin/accounts/{account}/activate"),
                        Some(json!({})),
                    ),
                };
                let r = api
                    .send(
                        method,
                        &path,
                        Some(&token(who)),
                        Some(&key()),
                        body.map(|b| b.to_string()),
                    )
                    .await;
                let want = expected(who, class, own);
                checked += 1;
                if r.status != want {
                    mismatches.push(format!(
                        "{who:?} {class:?} {}: expected {want}, got {} {}",
                        if own { "own" } else { "other" },
                        r.status,
                        r.text
                    ));
                } else if want >= 400 {
                    let code = if want == 403 {
                        "forbidden"
                    } else {
                        "not_found"
                    };
                    if r.body["error"]["code"] != code {
                        mismatches.push(format!("{who:?} {class:?}: code {}", r.text));
                    }
                }
            }
        }
    }
    assert_eq!(checked, 7 * 8 * 2);
    assert!(
        mismatches.is_empty(),
        "role × tenant mismatches:\n{}",
        mismatches.join("\n")
    );
    // The admin-only list, which names no account.
    for who in [
        Who::Owner,
        Who::Admin,
        Who::Editor,
        Who::Viewer,
        Who::BotScoped,
        Who::BotUnscoped,
    ] {
        api.get("/v1/admin/accounts", &token(who))
            .await
            .expect_error(403, "forbidden");
    }
    api.get("/v1/admin/accounts", &token(Who::Developer))
        .await
        .expect(200);
}
on_both_backends!(every_role_gets_the_spec_status_on_its_own_and_another_tenants_account);

async fn a_revoked_token_is_refused_at_once(api: &Api) {
    let (account, _) = api.funded_account(10).await;
    let claims = Claims::new(
        "leaky-bot",
        Role::SystemBot,
        None,
        now_unix(),
        Duration::from_secs(600),
    )
    .unwrap();
    let jti = claims.jti.clone().unwrap();
    let bot = api.keys.mint(&claims);
    let path = format!(
        "/v1/accounts/{account}/balance?min_position={}",
        api.head().await
    );
    api.get(&path, &bot).await.expect(200);
    // Only a developer revokes.
    api.post(
        "/v1/admin/tokens/revoke",
        &api.owner(&account),
        None,
        json!({ "jti": jti }),
    )
    .await
    .expect_error(403, "forbidden");
    api.post(
        "/v1/admin/tokens/revoke",
        &api.developer(),
        None,
        json!({ "jti": "" }),
    )
    .await
    .expect_error(422, "invalid_request");
    let r = api
        .post(
            "/v1/admin/tokens/revoke",
            &api.developer(),
            None,
            json!({ "jti": jti, "reason": "leaked in a log" }),
        )
        .await;
    let b = r.expect(200);
    assert_eq!(b["jti"], jti.as_str());
    assert_eq!(b["revoked"], true);
    assert_eq!(b["newly_revoked"], true);
    api.get(&path, &bot).await.expect_error(401, "unauthorized");
    // Again: idempotent.
    let again = api
        .post(
            "/v1/admin/tokens/revoke",
            &api.developer(),
            None,
            json!({ "jti": jti }),
        )
        .await;
    assert_eq!(again.expect(200)["newly_revoked"], false);
    // Other tokens are untouched.
    api.get(&path, &api.bot(Some(&account))).await.expect(200);
}
on_both_backends!(a_revoked_token_is_refused_at_once);
