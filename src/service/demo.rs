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
        ]
    })
}
