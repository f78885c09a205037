"""Apache Pulsar's official Python client as an independent client of Pulsaga's topics.

It knows nothing of Pulsaga but the `.avsc` files: it registers a partner by producing a
RegisterPartner command to `campaigns-partner-registration`, then reads `campaigns-events` from
its start and decodes every event with the schema file alone, printing each one as a JSON line
marked `EVENT `, until the partner's registration appears.

Usage: python_client.py <pulsar-url> <tenant/namespace> <avro-dir> <partner-id>
"""

import json
import sys
import uuid

import pulsar
from pulsar.schema import AvroSchema


def main():
    url, namespace, avro_dir, partner_id = sys.argv[1:5]

    def schema(topic):
        with open(f"{avro_dir}/{topic}.avsc") as file:
            return AvroSchema(None, schema_definition=json.load(file))

    def topic(name):
        return f"persistent://{namespace}/{name}"

    client = pulsar.Client(url)
    events = client.subscribe(
        topic("campaigns-events"),
        "python-client",
        schema=schema("campaigns-events"),
        consumer_type=pulsar.ConsumerType.Exclusive,
        initial_position=pulsar.InitialPosition.Earliest,
    )
    commands = client.create_producer(
        topic("campaigns-partner-registration"),
        schema=schema("campaigns-partner-registration"),
        batching_enabled=False,
    )
    message_id = str(uuid.uuid4())
    commands.send(
        {
            "partner_id": partner_id,
            "name": "Python Partner",
            "email": "python@example.com",
            "payout_account": "NL91ABNA0417164300",
        },
        partition_key=partner_id,
        properties={
            "message_id": message_id,
            "message_type": "RegisterPartner",
            "schema_version": "1",
            "correlation_id": message_id,
            "actor": "python-client",
        },
    )
    while True:
        message = events.receive(timeout_millis=60_000)
        events.acknowledge(message)
        event = message.value()["event"]
        # One line per event, marked: the client's own log shares stdout.
        record = json.dumps({"properties": message.properties(), "event": event}, default=str)
        print(f"EVENT {record}", flush=True)
        if str(event.get("partner_id")) == partner_id and "payout_account" in event:
            break
    commands.close()
    events.close()
    client.close()


if __name__ == "__main__":
    main()
