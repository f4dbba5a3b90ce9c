# One EC2 instance that runs the Clove kernel and the relay as systemd units (deploy/systemd), installed
# by cloud-init: Node 20, a build of clove_repo at clove_version in /opt/clove, both units, a machine
# token with which the kernel dials the relay on the same instance, and a user token for the operator.

locals {
  machine_id = coalesce(var.machine_id, var.name)
  tags       = merge({ "clove.name" = var.name }, var.tags)
}

data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"] # Debian's official AWS account

  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

resource "aws_security_group" "relay" {
  name_prefix = "${var.name}-relay-"
  description = "Clove relay: its port only"
  vpc_id      = var.vpc_id
  tags        = local.tags

  ingress {
    description = "clove relay (dashboard, fleet API, kernel tunnels)"
    from_port   = var.relay_port
    to_port     = var.relay_port
    protocol    = "tcp"
    cidr_blocks = var.relay_allowed_cidrs
  }

  # apt, npm and git at first boot; other kernels' relays and agents' HTTP afterwards.
  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_instance" "clove" {
  ami                         = var.ami_id != null ? var.ami_id : data.aws_ami.debian.id
  instance_type               = var.instance_type
  subnet_id                   = var.subnet_id
  vpc_security_group_ids      = [aws_security_group.relay.id]
  key_name                    = var.key_name
  iam_instance_profile        = var.iam_instance_profile
  user_data_replace_on_change = true

  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    kernel_unit   = file("${path.module}/../systemd/clove.service")
    relay_unit    = file("${path.module}/../systemd/clove-relay.service")
    clove_repo    = var.clove_repo
    clove_version = var.clove_version
    machine_id    = local.machine_id
    relay_port    = var.relay_port
  })

  root_block_device {
    volume_size = var.root_volume_gb
    volume_type = "gp3"
    encrypted   = true
  }

  metadata_options {
    http_tokens = "required"
  }

  tags = merge(local.tags, { Name = var.name })
}
