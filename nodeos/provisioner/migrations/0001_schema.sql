-- The provisioner's schema, version 1 (docs/provisioner.md, "The schema").
--
-- Every object has a unique name (pvc.config.names: checked by the API, which also checks every bound); objects
-- refer to one another by id, with ON DELETE RESTRICT wherever a removal would break a user, so the database itself
-- refuses what the API's 409 explains. Sizes are bytes, memory MiB, a NIC's network its VNI. The columns of
-- system_template are the VM definition's fields (pvc.nodeos.provisioner.models.vm_fields maps them).

-- Base images: an RBD volume and the protected snapshot that VM disks are cloned from (copy-on-write).
CREATE TABLE image (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    pool        text NOT NULL,
    volume      text NOT NULL,
    snapshot    text NOT NULL,
    format      text NOT NULL,                       -- as uploaded: raw, qcow2 or vmdk (the volume is raw)
    size_bytes  bigint NOT NULL CHECK (size_bytes > 0),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (pool, volume)
);

-- CPU, memory, firmware, consoles, placement and migration of the VMs made from it.
CREATE TABLE system_template (
    id                        serial PRIMARY KEY,
    name                      text NOT NULL UNIQUE,
    description               text NOT NULL DEFAULT '',
    vcpus                     int NOT NULL CHECK (vcpus > 0),
    sockets                   int,                   -- topology: all three or none
    cores                     int,
    threads                   int,
    memory_mib                int NOT NULL CHECK (memory_mib > 0),
    machine                   text NOT NULL,
    firmware                  text NOT NULL,
    cpu_model                 text,
    serial_console            boolean NOT NULL,
    graphics                  text NOT NULL,
    rng                       boolean NOT NULL,
    guest_agent               boolean NOT NULL,
    node_limit                text[] NOT NULL DEFAULT '{}',
    node_selector             text,
    autostart                 boolean NOT NULL,
    migration_method          text,
    migration_max_downtime_ms int,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    CHECK ((sockets IS NULL) = (cores IS NULL) AND (cores IS NULL) = (threads IS NULL))
);

-- The NICs of the VMs made from it, in order (eth0, eth1, ...), and how their MACs are made.
CREATE TABLE network_template (
    id           serial PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    description  text NOT NULL DEFAULT '',
    mac_template text,                               -- e.g. '{prefix}:{vmid}:{netid}'; NULL: PVC's own MACs
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE network_template_nic (
    template int NOT NULL REFERENCES network_template ON DELETE CASCADE,
    position int NOT NULL CHECK (position >= 0),
    network  int NOT NULL,                           -- the network's VNI (a bridged network's VLAN id)
    model    text NOT NULL,
    PRIMARY KEY (template, position)
);

-- The disks of the VMs made from it: each a new volume <vm>_<disk_id> in its pool, cloned from an image's snapshot
-- (and grown to size_bytes when that is larger) or, without an image, created empty at size_bytes.
CREATE TABLE storage_template (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE storage_template_disk (
    template   int NOT NULL REFERENCES storage_template ON DELETE CASCADE,
    position   int NOT NULL CHECK (position >= 0),
    disk_id    text NOT NULL,
    pool       text NOT NULL,
    size_bytes bigint CHECK (size_bytes > 0),
    image      int REFERENCES image ON DELETE RESTRICT,
    bus        text NOT NULL,
    PRIMARY KEY (template, position),
    UNIQUE (template, disk_id),
    CHECK (size_bytes IS NOT NULL OR image IS NOT NULL)
);
CREATE INDEX storage_template_disk_image ON storage_template_disk (image);

-- cloud-init user-data, stored as given: a #cloud-config document or a MIME multipart message.
CREATE TABLE userdata (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    kind        text NOT NULL CHECK (kind IN ('cloud-config', 'multipart')),
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- An imported OVA: its OVF descriptor as uploaded, and each disk, converted into an RBD volume.
CREATE TABLE ova (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    ovf         text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ova_disk (
    ova            int NOT NULL REFERENCES ova ON DELETE CASCADE,
    position       int NOT NULL CHECK (position >= 0),
    disk_id        text NOT NULL,
    pool           text NOT NULL,
    volume         text NOT NULL,
    source_format  text NOT NULL,                    -- the disk's format inside the OVA (vmdk, ...)
    capacity_bytes bigint NOT NULL CHECK (capacity_bytes > 0),
    PRIMARY KEY (ova, position),
    UNIQUE (ova, disk_id),
    UNIQUE (pool, volume)
);

-- What `pvc vm create --profile` combines. kind 'image': disks from the storage template; kind 'ova': from the OVA.
CREATE TABLE profile (
    id               serial PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    description      text NOT NULL DEFAULT '',
    kind             text NOT NULL CHECK (kind IN ('image', 'ova')),
    system_template  int NOT NULL REFERENCES system_template ON DELETE RESTRICT,
    network_template int REFERENCES network_template ON DELETE RESTRICT,
    storage_template int REFERENCES storage_template ON DELETE RESTRICT,
    userdata         int REFERENCES userdata ON DELETE RESTRICT,
    ova              int REFERENCES ova ON DELETE RESTRICT,
    arguments        jsonb NOT NULL DEFAULT '{}',    -- default values of `pvc vm create --arg key=value`
    metadata         jsonb NOT NULL DEFAULT '{}',    -- extra cloud-init meta-data keys
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'ova') = (ova IS NOT NULL)),
    CHECK (kind = 'image' OR storage_template IS NULL)
);
CREATE INDEX profile_system_template ON profile (system_template);
CREATE INDEX profile_network_template ON profile (network_template);
CREATE INDEX profile_storage_template ON profile (storage_template);
CREATE INDEX profile_userdata ON profile (userdata);
CREATE INDEX profile_ova ON profile (ova);

-- What each VM was created from, as rendered then (the profile may change or go later): the cloud-init seed is
-- built from these, and the metadata service serves them.
CREATE TABLE instance (
    vm_uuid        uuid PRIMARY KEY,
    vm_name        text NOT NULL,
    profile        text,                             -- the profile's name at creation; NULL for `--image` creates
    arguments      jsonb NOT NULL DEFAULT '{}',
    user_data      text,
    meta_data      jsonb NOT NULL DEFAULT '{}',
    network_config text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
