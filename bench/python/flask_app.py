"""A small Flask app as people write them, served by bench/compare.sh under every Python server.

The benchmarked route is GET /users/<id>: a URL converter, a lookup and a jsonify'd record, the
shape of most small JSON endpoints. The other routes are there so that the URL map is not a
single rule.
"""
from flask import Flask, abort, jsonify, request

app = Flask(__name__)

USERS = {
    i: {"id": i, "name": f"user{i}", "email": f"user{i}@example.com", "roles": ["reader"] + (["admin"] if i % 10 == 0 else [])}
    for i in range(1, 101)
}


@app.get("/")
def index():
    return "Hello, World!"


@app.get("/users/<int:user_id>")
def user(user_id):
    found = USERS.get(user_id)
    if found is None:
        abort(404)
    return jsonify(found)


@app.get("/users")
def users():
    limit = request.args.get("limit", 10, type=int)
    return jsonify(list(USERS.values())[:limit])


@app.post("/echo")
def echo():
    return jsonify(request.get_json(force=True))
