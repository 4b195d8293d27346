//! The demo flow published on an empty development database: seed 000's new_user flow.

use serde_json::{Value, json};

pub fn demo_flow_definition() -> Value {
    json!({
        "key": "new_user",
        "title": "Get started",
        "description": "Verify your email, set up your profile, bring your team and connect your tools.",
        "steps": [
            {
                "key": "verify_email",
                "title": "Verify your email",
                "points": 10,
                "trigger": { "event": "user.email_verified" }
            },
            {
                "key": "add_profile_photo",
                "title": "Add a profile photo",
                "required": false,
                "dependsOn": ["verify_email"],
                "points": 5,
                "trigger": { "event": "profile.photo_uploaded" }
            },
            {
                "key": "invite_teammate",
                "title": "Invite a teammate",
                "description": "Onboarding is better together.",
                "condition": { "plan": "team" },
                "dependsOn": ["verify_email"],
                "points": 20,
                "trigger": { "event": "team.member_invited", "where": { "attr": "count", "op": "gte", "value": 1 } }
            },
            {
                "key": "connect_integration",
                "title": "Connect your first integration",
                "dependsOn": ["verify_email"],
                "points": 25,
                "trigger": { "event": "integration.connected" }
            }
        ],
        // Reminders with a holdout each, so `onramp demo-data` populations show what they
        // do (`nudgeResults`). The stuck rule watches the slow set-up step, not the optional
        // photo: a shorter version without the photo step keeps these rules valid.
        "nudges": {
            "rules": [
                {
                    "key": "get_started",
                    "trigger": { "kind": "not_started", "after": "24h" },
                    "title": "Two minutes to get going",
                    "message": "Verify your email to unlock the rest of the set-up.",
                    "channel": "in_app",
                    "holdoutPercent": 20
                },
                {
                    "key": "next_step",
                    "trigger": { "kind": "no_progress", "after": "2d", "every": "2d", "maxCount": 2 },
                    "title": "Pick up where you left off",
                    "message": "Your next step takes a few minutes.",
                    "channel": "both",
                    "holdoutPercent": 20
                },
                {
                    "key": "connect_tools",
                    "trigger": { "kind": "stuck", "step": "connect_integration", "after": "1d" },
                    "title": "Connect your first integration",
                    "message": "Bring in the tools you already use: it takes a minute.",
                    "channel": "webhook",
                    "holdoutPercent": 20
                }
            ]
        }
    })
}
