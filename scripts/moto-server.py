#!/usr/bin/env python3
"""moto's server (a local S3 + DynamoDB for the aws backend's tests), with DynamoDB's requests
applied one at a time.

    scripts/moto-server.py [-H 127.0.0.1] [-p 5000]

Why not `python3 -m moto.server`: moto answers requests on several threads, and its
TransactWriteItems is not isolated from them. A transaction first deep-copies the table, and
when one of its conditions fails it puts that copy back, undoing whatever another request wrote
meanwhile; concurrent transactions also fail with "dictionary changed size during iteration".
DynamoDB makes each transaction serializable with every other write (its developer guide,
"Isolation levels for DynamoDB transactions"), and the aws backend relies on that: a publish
that replaced an item deletes the old payload from S3 once its transaction succeeded, so an
undone transaction left the index pointing at a deleted payload (`same_id_writers_leave_one_item`
failed 10 of 12 runs on two busy cores with plain moto, none with this one). Holding one lock
across each DynamoDB request gives moto that isolation; S3 requests still run at once.
"""
import argparse
import os
import threading

from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app


def serialized_dynamodb(app):
    lock = threading.Lock()

    def wsgi(environ, start_response):
        # Every DynamoDB call names its operation in X-Amz-Target ("DynamoDB_20120810.PutItem").
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
            return app(environ, start_response)
        with lock:
            # The body is produced under the lock too: a lazy one would run after it.
            return list(app(environ, start_response))

    return wsgi


def main():
    parser = argparse.ArgumentParser(
        description="moto's S3 + DynamoDB server, DynamoDB requests one at a time"
    )
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("-p", "--port", type=int, default=5000, help="port to listen on")
    args = parser.parse_args()
    # As moto's own server does: its S3 builds some URLs from it.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = serialized_dynamodb(DomainDispatcherApplication(create_backend_app))
    run_simple(args.host, args.port, app, threaded=True)


if __name__ == "__main__":
    main()
