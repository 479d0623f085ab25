//! Error answers through the real router over real HTTP, on PostgreSQL and
//! SQLite (SPEC §3): malformed JSON and a missing idempotency key (400),
//! wrong, unknown and missing fields and bad query values (422), unknown
//! accounts, holds, deductions and routes (404), taken slugs, closed holds
//! and reused idempotency keys (409), spending beyond the credits (402), an
//! unknown operation (422), an oversized body (413) and a `min_position`
//! that never arrives (503). Who may call what is in `http_auth.rs`.

mod common;

use std::time::{Duration, Instant};

use common::{key, random_account, random_uuid, unique_slug, Api, Resp};
use reqwest::Method;
use serde_json::{json, Value};

async fn malformed_json_and_a_missing_idempotency_key_are_400(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let bot = api.bot(Some(&id));
    let dev = api.developer();
    let deductions = format!("/v1/accounts/{id}/deductions");

    for raw in [
        r#"{"operation": "clustering""#,
        "not json",
        "[1, 2]",
        "\"text\"",
    ] {
        let r = api
            .send(
                Method::POST,
                &deductions,
                Some(&bot),
                Some(&key()),
                Some(raw.into()),
            )
            .await;
        r.expect_error(400, "invalid_request");
    }
    let r = api
        .send(
            Method::POST,
            "/v1/accounts",
            Some(&dev),
            None,
            Some("{".into()),
        )
        .await;
    r.expect_error(400, "invalid_request");

    let h = api.hold(&id, json!({ "credits": 5 })).await;
    let hold = h.expect(201)["id"].as_str().unwrap().to_owned();
    let d = api.deduct(&id, json!({ "operation": "clustering" })).await;
    let deduction = d.expect(201)["id"].as_str().unwrap().to_owned();
    for (path, token, body) in [
        (
            deductions.clone(),
            &bot,
            json!({ "operation": "clustering" }),
        ),
        (
            format!("/v1/accounts/{id}/holds"),
            &bot,
            json!({ "credits": 1 }),
        ),
        (
            format!("/v1/accounts/{id}/holds/{hold}/capture"),
            &bot,
            json!({ "credits": 1 }),
        ),
        (
            format!("/v1/accounts/{id}/grants"),
            &dev,
            json!({ "credits": 1, "source": "purchase" }),
        ),
        (
            format!("/v1/admin/accounts/{id}/adjust-credits"),
            &dev,
            json!({ "credits": 1, "reason": "x" }),
        ),
        (
            format!("/v1/accounts/{id}/deductions/{deduction}/refund"),
            &dev,
            json!({ "credits": 1 }),
        ),
    ] {
        let r = api.post(&path, token, None, body.clone()).await;
        let details = r.expect_error(400, "invalid_request");
        assert_eq!(details["header"], "Idempotency-Key", "{path}");
        // A key that is not printable ASCII without spaces is 400 too.
        let r = api.post(&path, token, Some("two words"), body).await;
        r.expect_error(400, "invalid_request");
    }
    // Nothing above moved the balance.
    let b = api.balance(&id, d.position()).await;
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64()),
        (Some(90), Some(5))
    );
}
on_both_backends!(malformed_json_and_a_missing_idempotency_key_are_400);

async fn values_of_the_wrong_type_are_422_naming_the_field(api: &Api) {
    let id = api.open_account().await;
    let dev = api.developer();
    let cases: Vec<(String, Value, &str)> = vec![
        (
            format!("/v1/accounts/{id}/deductions"),
            json!({ "operation": "clustering", "units": "two" }),
            "units",
        ),
        (
            format!("/v1/accounts/{id}/deductions"),
            json!({ "operation": "clustering", "tokens_input": -5 }),
            "tokens_input",
        ),
        (
            format!("/v1/accounts/{id}/deductions"),
            json!({ "operation": 7 }),
            "operation",
        ),
        (
            format!("/v1/accounts/{id}/deductions"),
            json!({ "operation": "clustering", "cost_usd": 0.5 }),
            "cost_usd",
        ),
        (
            format!("/v1/accounts/{id}/deductions"),
            json!({ "operation": "clustering", "metadata": [1] }),
            "metadata",
        ),
        (
            format!("/v1/accounts/{id}/grants"),
            json!({ "credits": 10, "source": "lottery" }),
            "source",
        ),
        (
            format!("/v1/accounts/{id}/grants"),
            json!({ "credits": "ten", "source": "purchase" }),
            "credits",
        ),
        (
            format!("/v1/accounts/{id}/grants"),
            json!({ "credits": 10, "source": "purchase", "expires_at": "tomorrow" }),
            "expires_at",
        ),
        (
            format!("/v1/accounts/{id}/holds"),
            json!({ "credits": 10, "ttl_seconds": "long" }),
            "ttl_seconds",
        ),
    ];
    for (path, body, field) in cases {
        let token = if path.ends_with("grants") {
            dev.clone()
        } else {
            api.bot(Some(&id))
        };
        let r = api.post(&path, &token, Some(&key()), body.clone()).await;
        let details = r.expect_error(422, "invalid_request");
        assert_eq!(details["field"], field, "{path} {body}");
    }
    let r = api
        .patch(
            &format!("/v1/accounts/{id}"),
            &dev,
            json!({ "billing_address": { "city": 5 } }),
        )
        .await;
    assert_eq!(
        r.expect_error(422, "invalid_request")["field"],
        "billing_address.city"
    );
    let r = api
        .patch(
            &format!("/v1/accounts/{id}"),
            &dev,
            json!({ "credit_limit": "lots" }),
        )
        .await;
    assert_eq!(
        r.expect_error(422, "invalid_request")["field"],
        "credit_limit"
    );
}
on_both_backends!(values_of_the_wrong_type_are_422_naming_the_field);

async fn an_unknown_body_field_is_422_naming_that_field(api: &Api) {
    let id = api.open_account().await;
    let r = api
        .post(
            &format!("/v1/accounts/{id}/deductions"),
            &api.bot(Some(&id)),
            Some(&key()),
            json!({ "operation": "clustering", "colour": "red" }),
        )
        .await;
    assert_eq!(r.expect_error(422, "invalid_request")["field"], "colour");
    let r = api
        .patch(
            &format!("/v1/accounts/{id}"),
            &api.developer(),
            json!({ "nickname": "acme" }),
        )
        .await;
    assert_eq!(r.expect_error(422, "invalid_request")["field"], "nickname");
}
on_both_backends!(an_unknown_body_field_is_422_naming_that_field);

async fn a_missing_body_field_is_422_naming_that_field(api: &Api) {
    let mut body = Api::account_body(&unique_slug());
    body.as_object_mut().unwrap().remove("slug");
    let r = api.open_account_with(body).await;
    assert_eq!(r.expect_error(422, "invalid_request")["field"], "slug");
    let id = api.open_account().await;
    let r = api
        .post(
            &format!("/v1/accounts/{id}/deductions"),
            &api.bot(Some(&id)),
            Some(&key()),
            json!({ "units": 3 }),
        )
        .await;
    assert_eq!(r.expect_error(422, "invalid_request")["field"], "operation");
}
on_both_backends!(a_missing_body_field_is_422_naming_that_field);

async fn a_query_parameter_of_the_wrong_type_is_422_naming_it(api: &Api) {
    let id = api.open_account().await;
    let dev = api.developer();
    for (path, field) in [
        (format!("/v1/accounts/{id}/transactions?limit=ten"), "limit"),
        (
            format!("/v1/accounts/{id}/transactions?from=yesterday"),
            "from",
        ),
        (format!("/v1/accounts/{id}/usage?limit=-1"), "limit"),
        ("/v1/admin/accounts?limit=many".to_owned(), "limit"),
    ] {
        let r = api.get(&path, &dev).await;
        assert_eq!(
            r.expect_error(422, "invalid_request")["field"],
            field,
            "{path}"
        );
    }
}
on_both_backends!(a_query_parameter_of_the_wrong_type_is_422_naming_it);

async fn bad_limits_cursors_plans_slugs_and_values_are_422(api: &Api) {
    let (id, p) = api.funded_account(100).await;
    let dev = api.developer();
    let field_of = |r: Resp| -> String {
        r.expect_error(422, "invalid_request")["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    for list in [
        format!("/v1/accounts/{id}/transactions"),
        format!("/v1/accounts/{id}/usage"),
        "/v1/admin/accounts".to_owned(),
        "/v1/billing/transactions".to_owned(),
    ] {
        let token = if list.starts_with("/v1/billing") {
            api.owner(&id)
        } else {
            dev.clone()
        };
        for limit in [0, 501] {
            let r = api
                .get(&format!("{list}?min_position={p}&limit={limit}"), &token)
                .await;
            assert_eq!(field_of(r), "limit", "{list} limit={limit}");
        }
        for limit in [1, 500] {
            api.get(&format!("{list}?min_position={p}&limit={limit}"), &token)
                .await
                .expect(200);
        }
    }
    for list in [
        format!("/v1/accounts/{id}/transactions"),
        format!("/v1/accounts/{id}/usage"),
    ] {
        let r = api
            .get(
                &format!("{list}?min_position={p}&cursor=not-a-cursor"),
                &dev,
            )
            .await;
        assert_eq!(field_of(r), "cursor", "{list}");
    }

    // Opening: unknown plan, bad slug, country, email, status.
    let open = |change: Value| async move {
        let mut body = Api::account_body(&unique_slug());
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        api.open_account_with(body).await
    };
    assert_eq!(field_of(open(json!({ "plan": "platinum" })).await), "plan");
    for slug in ["Bad Slug", "-leading", "trailing-", "", "ünïcode"] {
        assert_eq!(
            field_of(open(json!({ "slug": slug })).await),
            "slug",
            "{slug:?}"
        );
    }
    assert_eq!(
        field_of(open(json!({ "slug": "a".repeat(65) })).await),
        "slug"
    );
    assert_eq!(field_of(open(json!({ "country": "USA" })).await), "country");
    assert_eq!(
        field_of(open(json!({ "billing_email": "nope" })).await),
        "billing_email"
    );
    assert_eq!(field_of(open(json!({ "name": "  " })).await), "name");
    assert_eq!(
        field_of(open(json!({ "status": "suspended" })).await),
        "status"
    );
    assert_eq!(
        field_of(open(json!({ "tax_rate": "101" })).await),
        "tax_rate"
    );
    assert_eq!(
        field_of(open(json!({ "credit_limit": -1 })).await),
        "credit_limit"
    );
    assert_eq!(
        field_of(open(json!({ "low_balance_threshold": -1 })).await),
        "low_balance_threshold"
    );

    // Catalog slugs and values.
    let plan = json!({
        "name": "X",
        "price": { "amount": "1.00", "currency": "USD" },
        "billing_cycle": "monthly",
        "included_credits": 1,
    });
    assert_eq!(
        field_of(api.put("/v1/admin/plans/BAD", &dev, plan.clone()).await),
        "slug"
    );
    let mut negative = plan.clone();
    negative["included_credits"] = json!(-1);
    assert_eq!(
        field_of(api.put("/v1/admin/plans/neg", &dev, negative).await),
        "included_credits"
    );
    let package = json!({
        "name": "X",
        "credits": 10,
        "price": { "amount": "1.00", "currency": "USD" },
        "discount_percent": "150",
    });
    assert_eq!(
        field_of(api.put("/v1/admin/credit-packages/x", &dev, package).await),
        "discount_percent"
    );
    assert_eq!(
        field_of(
            api.put(
                "/v1/admin/credit-costs/Not-An-Op",
                &dev,
                json!({ "cost": 1, "unit": "per_request" })
            )
            .await
        ),
        "operation"
    );
    assert_eq!(
        field_of(
            api.put(
                "/v1/admin/credit-costs/clustering",
                &dev,
                json!({ "cost": -1, "unit": "per_request" })
            )
            .await
        ),
        "cost"
    );

    // Credit commands.
    assert_eq!(
        field_of(
            api.hold(&id, json!({ "credits": 5, "ttl_seconds": 0 }))
                .await
        ),
        "ttl_seconds"
    );
    assert_eq!(field_of(api.hold(&id, json!({})).await), "credits");
    assert_eq!(
        field_of(
            api.hold(&id, json!({ "credits": 5, "operation": "clustering" }))
                .await
        ),
        "credits"
    );
    assert_eq!(
        field_of(api.hold(&id, json!({ "credits": 0 })).await),
        "credits"
    );
    assert_eq!(
        field_of(
            api.deduct(&id, json!({ "operation": "clustering", "units": 0 }))
                .await
        ),
        "units"
    );
    assert_eq!(
        field_of(
            api.deduct(&id, json!({ "operation": "clustering", "units": u64::MAX }))
                .await
        ),
        "units"
    );
    assert_eq!(
        field_of(api.hold(&id, json!({ "credits": i64::MAX })).await),
        "credits"
    );
    assert_eq!(
        field_of(
            api.deduct(&id, json!({ "operation": "clustering", "cost_usd": "-1" }))
                .await
        ),
        "cost_usd"
    );
    let grant = |body: Value| {
        let path = format!("/v1/accounts/{id}/grants");
        let dev = dev.clone();
        async move { api.post(&path, &dev, Some(&key()), body).await }
    };
    assert_eq!(
        field_of(grant(json!({ "credits": 0, "source": "purchase" })).await),
        "credits"
    );
    assert_eq!(
        field_of(
            grant(
                json!({ "credits": 5, "source": "purchase", "expires_at": "2020-01-01T00:00:00Z" })
            )
            .await
        ),
        "expires_at"
    );
    let adjust = |body: Value| {
        let path = format!("/v1/admin/accounts/{id}/adjust-credits");
        let dev = dev.clone();
        async move { api.post(&path, &dev, Some(&key()), body).await }
    };
    assert_eq!(
        field_of(adjust(json!({ "credits": 0, "reason": "x" })).await),
        "credits"
    );
    assert_eq!(
        field_of(adjust(json!({ "credits": 5, "reason": " " })).await),
        "reason"
    );

    // Reads.
    let owner = api.owner(&id);
    let r = api
        .get(
            &format!("/v1/accounts/{id}/usage/analytics?group_by=week"),
            &owner,
        )
        .await;
    assert_eq!(field_of(r), "group_by");
    let r = api
        .get(
            &format!("/v1/accounts/{id}/usage/analytics?from=2026-02-01&to=2026-01-01"),
            &owner,
        )
        .await;
    assert_eq!(field_of(r), "from");
    let r = api
        .get(
            &format!("/v1/accounts/{id}/usage/analytics?from=someday"),
            &owner,
        )
        .await;
    assert_eq!(field_of(r), "from");
    let r = api
        .get(
            &format!("/v1/accounts/{id}/transactions?type=bogus"),
            &owner,
        )
        .await;
    assert_eq!(field_of(r), "type");
    let r = api
        .get(
            &format!("/v1/accounts/{id}/balance?min_position=soon"),
            &owner,
        )
        .await;
    assert_eq!(field_of(r), "min_position");
    // Alias routes need a token that names an account.
    for path in [
        "/v1/billing/account_balance",
        "/v1/account/settings",
        "/v1/billing/usage",
    ] {
        assert_eq!(field_of(api.get(path, &dev).await), "account_id", "{path}");
    }
    // Nothing moved.
    let b = api.balance(&id, p).await;
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64()),
        (Some(100), Some(0))
    );
}
on_both_backends!(bad_limits_cursors_plans_slugs_and_values_are_422);

async fn a_cursor_that_no_page_gave_is_422_on_every_list(api: &Api) {
    let (id, p) = api.funded_account(10).await;
    let dev = api.developer();
    for list in [
        format!("/v1/accounts/{id}/transactions"),
        format!("/v1/accounts/{id}/usage"),
        "/v1/admin/accounts".to_owned(),
    ] {
        let r = api
            .get(
                &format!("{list}?min_position={p}&cursor=not-a-cursor"),
                &dev,
            )
            .await;
        assert_eq!(
            r.expect_error(422, "invalid_request")["field"],
            "cursor",
            "{list}"
        );
    }
}
on_both_backends!(a_cursor_that_no_page_gave_is_422_on_every_list);

async fn unknown_accounts_holds_deductions_and_routes_are_404(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let bot = api.bot(Some(&id));
    let dev = api.developer();
    let hold = random_uuid();
    let deduction = random_uuid();
    let missing = random_account();
    let cases: Vec<(Method, String, &str, Option<Value>)> = vec![
        (
            Method::POST,
            format!("/v1/accounts/{id}/holds/{hold}/capture"),
            &bot,
            Some(json!({ "credits": 1 })),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/holds/{hold}/capture"),
            &bot,
            None,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/holds/{hold}/release"),
            &bot,
            None,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/holds/not-a-uuid/release"),
            &bot,
            None,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions/{deduction}/refund"),
            &dev,
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions/not-a-uuid/refund"),
            &dev,
            Some(json!({})),
        ),
        (Method::GET, format!("/v1/accounts/{missing}"), &dev, None),
        (Method::GET, "/v1/accounts/not-an-id".to_owned(), &dev, None),
        (
            Method::GET,
            format!("/v1/accounts/{missing}/balance"),
            &dev,
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{missing}/transactions"),
            &dev,
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{missing}/usage"),
            &dev,
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{missing}/usage/analytics"),
            &dev,
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{missing}/limits"),
            &dev,
            None,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{missing}/deductions"),
            &dev,
            Some(json!({ "operation": "clustering" })),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{missing}/grants"),
            &dev,
            Some(json!({ "credits": 5, "source": "purchase" })),
        ),
        (
            Method::POST,
            format!("/v1/admin/accounts/{missing}/suspend"),
            &dev,
            None,
        ),
        (Method::GET, "/v1/no-such-route".to_owned(), &dev, None),
        (Method::GET, "/nothing-here".to_owned(), &dev, None),
    ];
    for (method, path, token, body) in cases {
        let r = api
            .send(
                method.clone(),
                &path,
                Some(token),
                Some(&key()),
                body.map(|b| b.to_string()),
            )
            .await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
        r.expect_error(404, "not_found");
    }
}
on_both_backends!(unknown_accounts_holds_deductions_and_routes_are_404);

async fn a_taken_slug_and_a_closed_hold_are_409(api: &Api) {
    let slug = unique_slug();
    api.open_account_with(Api::account_body(&slug))
        .await
        .expect(201);
    // Another key, or none: the slug is taken.
    api.open_account_with(Api::account_body(&slug))
        .await
        .expect_error(409, "conflict");
    let r = api
        .post(
            "/v1/accounts",
            &api.developer(),
            None,
            Api::account_body(&slug),
        )
        .await;
    r.expect_error(409, "conflict");

    let (id, _) = api.funded_account(100).await;
    let bot = api.bot(Some(&id));
    let h = api.hold(&id, json!({ "credits": 10 })).await;
    let hold = h.expect(201)["id"].as_str().unwrap().to_owned();
    let capture = format!("/v1/accounts/{id}/holds/{hold}/capture");
    let release = format!("/v1/accounts/{id}/holds/{hold}/release");
    api.post(&capture, &bot, Some(&key()), json!({ "credits": 4 }))
        .await
        .expect(200);
    api.post(&capture, &bot, Some(&key()), json!({ "credits": 4 }))
        .await
        .expect_error(409, "conflict");
    api.post_empty(&capture, &bot, Some(&key()))
        .await
        .expect_error(409, "conflict");
    api.post_empty(&release, &bot, Some(&key()))
        .await
        .expect_error(409, "conflict");

    let h = api.hold(&id, json!({ "credits": 10 })).await;
    let released = h.expect(201)["id"].as_str().unwrap().to_owned();
    let rel = api
        .post_empty(
            &format!("/v1/accounts/{id}/holds/{released}/release"),
            &bot,
            None,
        )
        .await;
    rel.expect(200);
    let r = api
        .post(
            &format!("/v1/accounts/{id}/holds/{released}/capture"),
            &bot,
            Some(&key()),
            json!({ "credits": 1 }),
        )
        .await;
    r.expect_error(409, "conflict");
    let b = api.balance(&id, rel.position()).await;
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64()),
        (Some(96), Some(0))
    );
}
on_both_backends!(a_taken_slug_and_a_closed_hold_are_409);

async fn a_reused_idempotency_key_with_another_body_is_409(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let bot = api.bot(Some(&id));
    let dev = api.developer();
    let deductions = format!("/v1/accounts/{id}/deductions");
    let k = key();
    api.post(
        &deductions,
        &bot,
        Some(&k),
        json!({ "operation": "clustering" }),
    )
    .await
    .expect(201);
    for other in [
        json!({ "operation": "content_generation" }),
        json!({ "operation": "clustering", "units": 2 }),
        json!({ "operation": "clustering", "model": "m" }),
    ] {
        api.post(&deductions, &bot, Some(&k), other)
            .await
            .expect_error(409, "idempotency_key_reused");
    }
    // The same key on another route is another request.
    api.post(
        &format!("/v1/accounts/{id}/holds"),
        &bot,
        Some(&k),
        json!({ "credits": 1 }),
    )
    .await
    .expect_error(409, "idempotency_key_reused");

    let grants = format!("/v1/accounts/{id}/grants");
    let k = key();
    api.post(
        &grants,
        &dev,
        Some(&k),
        json!({ "credits": 5, "source": "purchase" }),
    )
    .await
    .expect(201);
    api.post(
        &grants,
        &dev,
        Some(&k),
        json!({ "credits": 6, "source": "purchase" }),
    )
    .await
    .expect_error(409, "idempotency_key_reused");

    let k = key();
    let h = api
        .post(
            &format!("/v1/accounts/{id}/holds"),
            &bot,
            Some(&k),
            json!({ "credits": 3 }),
        )
        .await;
    let p = h.position();
    api.post(
        &format!("/v1/accounts/{id}/holds"),
        &bot,
        Some(&k),
        json!({ "credits": 4 }),
    )
    .await
    .expect_error(409, "idempotency_key_reused");

    let slug = unique_slug();
    let k = key();
    api.post("/v1/accounts", &dev, Some(&k), Api::account_body(&slug))
        .await
        .expect(201);
    let mut renamed = Api::account_body(&slug);
    renamed["name"] = json!("Another name");
    api.post("/v1/accounts", &dev, Some(&k), renamed)
        .await
        .expect_error(409, "idempotency_key_reused");

    let b = api.balance(&id, p).await;
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64()),
        (Some(95), Some(3)),
        "each request moved the balance once"
    );
}
on_both_backends!(a_reused_idempotency_key_with_another_body_is_409);

async fn a_key_reused_to_open_another_slug_is_409(api: &Api) {
    let dev = api.developer();
    let k = key();
    api.post(
        "/v1/accounts",
        &dev,
        Some(&k),
        Api::account_body(&unique_slug()),
    )
    .await
    .expect(201);
    let second = unique_slug();
    api.post("/v1/accounts", &dev, Some(&k), Api::account_body(&second))
        .await
        .expect_error(409, "idempotency_key_reused");
}
on_both_backends!(a_key_reused_to_open_another_slug_is_409);

async fn spending_beyond_the_available_credits_is_402_with_the_numbers(api: &Api) {
    let (id, _) = api.funded_account(5).await;
    let bot = api.bot(Some(&id));
    let details = api
        .deduct(&id, json!({ "operation": "clustering" }))
        .await
        .expect_error(402, "insufficient_credits")
        .clone();
    assert_eq!(
        details,
        json!({ "balance": 5, "available": 5, "required": 10 })
    );

    let h = api.hold(&id, json!({ "credits": 4 })).await;
    let hold = h.expect(201)["id"].as_str().unwrap().to_owned();
    let details = api
        .deduct(&id, json!({ "operation": "image_generation" }))
        .await
        .expect_error(402, "insufficient_credits")
        .clone();
    assert_eq!(
        details,
        json!({ "balance": 5, "available": 1, "required": 5 })
    );
    let details = api
        .hold(&id, json!({ "credits": 2 }))
        .await
        .expect_error(402, "insufficient_credits")
        .clone();
    assert_eq!(
        details,
        json!({ "balance": 5, "available": 1, "required": 2 })
    );
    let details = api
        .post(
            &format!("/v1/accounts/{id}/holds/{hold}/capture"),
            &bot,
            Some(&key()),
            json!({ "credits": 6 }),
        )
        .await
        .expect_error(402, "insufficient_credits")
        .clone();
    assert_eq!(
        details,
        json!({ "balance": 5, "available": 5, "required": 6 })
    );
    api.post(
        &format!("/v1/admin/accounts/{id}/adjust-credits"),
        &api.developer(),
        Some(&key()),
        json!({ "credits": -2, "reason": "too much" }),
    )
    .await
    .expect_error(402, "insufficient_credits");

    // A credit limit allows an overdraft down to minus the limit.
    let patched = api
        .patch(
            &format!("/v1/accounts/{id}"),
            &api.developer(),
            json!({ "credit_limit": 20 }),
        )
        .await;
    patched.expect(200);
    let d = api.deduct(&id, json!({ "operation": "clustering" })).await;
    assert_eq!(d.expect(201)["balance_after"], -5);
    assert_eq!(d.body["available_after"], -9);
    // available -19 is still above -20.
    let d = api.deduct(&id, json!({ "operation": "clustering" })).await;
    assert_eq!(d.expect(201)["available_after"], -19);
    let details = api
        .deduct(&id, json!({ "operation": "image_prompt_extraction" }))
        .await
        .expect_error(402, "insufficient_credits")
        .clone();
    assert_eq!(
        details,
        json!({ "balance": -15, "available": -19, "required": 2 })
    );
    let b = api.balance(&id, d.position()).await;
    assert_eq!(
        (
            b["balance"].as_i64(),
            b["held"].as_i64(),
            b["available"].as_i64()
        ),
        (Some(-15), Some(4), Some(-19))
    );
}
on_both_backends!(spending_beyond_the_available_credits_is_402_with_the_numbers);

async fn an_operation_missing_from_the_cost_table_is_422_unknown_operation(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let d = api
        .deduct(&id, json!({ "operation": "teleportation" }))
        .await;
    assert_eq!(
        d.expect_error(422, "unknown_operation")["operation"],
        "teleportation"
    );
    let h = api
        .hold(&id, json!({ "operation": "teleportation", "units": 2 }))
        .await;
    assert_eq!(
        h.expect_error(422, "unknown_operation")["operation"],
        "teleportation"
    );
    let h = api.hold(&id, json!({ "credits": 5 })).await;
    let hold = h.expect(201)["id"].as_str().unwrap().to_owned();
    let c = api
        .post(
            &format!("/v1/accounts/{id}/holds/{hold}/capture"),
            &api.bot(Some(&id)),
            Some(&key()),
            json!({ "operation": "teleportation" }),
        )
        .await;
    c.expect_error(422, "unknown_operation");
    // A key that is not even well-formed is a plain invalid request.
    let d = api.deduct(&id, json!({ "operation": "Not Valid" })).await;
    assert_eq!(d.expect_error(422, "invalid_request")["field"], "operation");
    let b = api.balance(&id, h.position()).await;
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64()),
        (Some(100), Some(5))
    );
}
on_both_backends!(an_operation_missing_from_the_cost_table_is_422_unknown_operation);

async fn a_body_over_64_kib_is_413_payload_too_large(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let big = json!({ "operation": "clustering", "metadata": { "blob": "x".repeat(70 * 1024) } });
    let r = api.deduct(&id, big).await;
    assert_eq!(
        r.expect_error(413, "payload_too_large")["limit_bytes"],
        64 * 1024
    );
    let mut body = Api::account_body(&unique_slug());
    body["name"] = json!("n".repeat(65 * 1024));
    api.open_account_with(body)
        .await
        .expect_error(413, "payload_too_large");
    // Just under the limit is read: refused for its value, not its size.
    let under = json!({ "operation": "clustering", "metadata": { "blob": "x".repeat(60 * 1024) } });
    let e = api.deduct(&id, under).await;
    assert_eq!(
        e.expect_error(422, "invalid_request")["field"],
        "metadata",
        "metadata is bounded to 4 KiB"
    );
    let fits = json!({ "operation": "clustering", "metadata": { "blob": "x".repeat(3 * 1024) } });
    let d = api.deduct(&id, fits).await;
    assert_eq!(d.expect(201)["balance_after"], 90);
}
on_both_backends!(a_body_over_64_kib_is_413_payload_too_large);

async fn a_min_position_past_the_log_head_is_422_at_once(api: &Api) {
    let id = api.open_account().await;
    let started = Instant::now();
    let r = api
        .get(
            &format!("/v1/accounts/{id}/balance?min_position=1000000000"),
            &api.owner(&id),
        )
        .await;
    let waited = started.elapsed();
    assert_eq!(
        r.expect_error(422, "invalid_request")["field"],
        "min_position"
    );
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    // The head itself is a position that exists: answered, not refused.
    let head = api.head().await;
    api.get(
        &format!("/v1/accounts/{id}/balance?min_position={head}"),
        &api.owner(&id),
    )
    .await
    .expect(200);
}
on_both_backends!(a_min_position_past_the_log_head_is_422_at_once);

/// The review's hostile inputs (issue 13): each is a 422 naming its field,
/// nothing is booked, and the read side keeps working afterwards.
async fn hostile_numbers_text_and_dates_are_422_and_book_nothing(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let cases = [
        (
            json!({ "operation": "clustering", "cost_usd": "79228162514264337593543950335" }),
            "cost_usd",
        ),
        (
            json!({ "operation": "clustering", "cost_usd": "0.0000000000001" }),
            "cost_usd",
        ),
        (
            json!({ "operation": "clustering", "tokens_input": 1_000_000_000_001_u64 }),
            "tokens_input",
        ),
        (
            json!({ "operation": "clustering", "model": "gpt\u{0}4" }),
            "model",
        ),
        (
            json!({ "operation": "clustering", "metadata": { "k": "bell\u{7}" } }),
            "metadata.k",
        ),
        (json!({ "operation": "clustering", "units": 1.5 }), "units"),
    ];
    for (body, field) in cases {
        let r = api.deduct(&id, body.clone()).await;
        assert_eq!(
            r.expect_error(422, "invalid_request")["field"],
            field,
            "{body}"
        );
    }
    // Tab, line feed and carriage return stay allowed in text.
    let ok = api
        .deduct(
            &id,
            json!({ "operation": "clustering", "model": "line 1\nline 2\r\n\tend", "cost_usd": "0.000000000001" }),
        )
        .await;
    let p = ok.expect(201)["position"].as_i64().unwrap();
    assert_eq!(
        api.balance(&id, p).await["balance"],
        90,
        "only the last one booked"
    );
    for to in [
        "-262143-01-05",
        "+262143-01-05",
        "0000-01-01",
        "10000-01-01",
    ] {
        let r = api
            .get(
                &format!("/v1/accounts/{id}/usage/analytics?to={to}"),
                &api.owner(&id),
            )
            .await;
        assert_eq!(
            r.expect_error(422, "invalid_request")["field"],
            "to",
            "{to}"
        );
    }
    let r = api
        .get(
            &format!("/v1/accounts/{id}/usage/analytics?min_position={p}"),
            &api.owner(&id),
        )
        .await;
    assert_eq!(r.expect(200)["totals"]["credits"], 10);
}
on_both_backends!(hostile_numbers_text_and_dates_are_422_and_book_nothing);
