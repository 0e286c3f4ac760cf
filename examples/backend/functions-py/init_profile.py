"""`init-profile` in Python (on `user.registered`): creates an empty profile, once.

The same function as the Rust `init-profile` of the example backend (src/functions/users.rs):
the delivery's body is the user (`{"user_id", "email", "name"}`); the answer is an effects
envelope whose result is the profile and which writes `profiles/{user_id}` with `if_absent`, so
a redelivered event never overwrites a profile the user has since edited. Its grant is
`kv = ["profiles:write"]`.

Runs with plain `python3` (the SDK is imported from sdks/python/src, no install):

    [functions.init-profile]
    command = ["python3", "functions-py/init_profile.py"]
    grants = { kv = ["profiles:write"] }
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "sdks", "python", "src"))

import keel


def init_profile(req: keel.Request) -> keel.Effects:
    user = req.json()
    if not isinstance(user, dict):
        raise keel.BadRequest("invalid JSON body: expected a user object")
    for field in ("user_id", "email", "name"):
        if not isinstance(user.get(field), str):
            raise keel.BadRequest(f"invalid JSON body: `{field}` must be a string")
    profile = {"display_name": user["name"], "bio": "", "avatar_url": None}
    return keel.Effects().result(profile).put_if_absent("profiles", user["user_id"], profile)


if __name__ == "__main__":
    keel.serve(init_profile)
