"""moto's server, as `python -m moto.server` runs it, with the tags of CreateBucket applied.

S3 tags a new general-purpose bucket with the `CreateBucketConfiguration/Tags` of its
CreateBucket request; moto 5.1.22 (tests/tools/moto/requirements.txt) ignores them. The
operator tags its buckets in the CreateBucket call itself and adopts only a bucket that carries
its tenant's UID tag, so a crash right after the create must leave a tagged bucket, as on S3.
This patch gives the new bucket those tags, as PutBucketTagging would; everything else is moto.
Remove it once moto applies them itself.

S3's GetBucketReplication returns the configuration as PutBucketReplication stored it; moto
5.1.22 stores all of it but renders a fixed template that drops the encryption of replicas
(`ReplicaKmsKeyID`), `SourceSelectionCriteria`, Replication Time Control and metrics, and always
says `DeleteMarkerReplication: Disabled`. The operator reads every setting back, so the second
patch renders what moto stored. moto does not copy objects to the destination bucket.
"""

import sys

import xmltodict
from moto import server
from moto.s3.models import s3_backends
from moto.s3.responses import S3Response

_bucket_response_put = S3Response._bucket_response_put


def _create_bucket_tags(body):
    """The tags of a CreateBucketConfiguration body, or None for any other body."""
    try:
        parsed = xmltodict.parse(body, force_list={"Tag": True}) if body else None
    except Exception:  # not XML: some other PUT on a bucket
        return None
    config = (parsed or {}).get("CreateBucketConfiguration")
    tags = (config or {}).get("Tags") or {}
    return {tag["Key"]: tag.get("Value") or "" for tag in tags.get("Tag", [])} or None


def bucket_response_put_with_create_tags(self, request, bucket_name, querystring):
    tags = _create_bucket_tags(self.body)
    existed = bucket_name in s3_backends.bucket_accounts
    response = _bucket_response_put(self, request, bucket_name, querystring)
    # Only a bucket this call created: a repeated CreateBucket of an existing one tags nothing.
    if tags and not existed and bucket_name in s3_backends.bucket_accounts:
        self.backend.put_bucket_tagging(bucket_name, tags)
    return response


S3Response._bucket_response_put = bucket_response_put_with_create_tags

_get_bucket_replication = S3Response.get_bucket_replication


def get_bucket_replication_as_stored(self):
    stored = self.backend.get_bucket_replication(self.bucket_name)
    if not stored:
        return _get_bucket_replication(self)
    config = {k: v for k, v in stored.items() if not k.startswith("@")}
    config["@xmlns"] = "http://s3.amazonaws.com/doc/2006-03-01/"
    return 200, {}, xmltodict.unparse({"ReplicationConfiguration": config})


S3Response.get_bucket_replication = get_bucket_replication_as_stored

if __name__ == "__main__":
    server.main(sys.argv[1:])
