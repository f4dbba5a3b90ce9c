variable "name" {
  description = "Name of the instance and prefix of everything the module creates; the kernel's machine id unless machine_id is set."
  type        = string
  default     = "clove"
  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,64}$", var.name))
    error_message = "name must match [A-Za-z0-9_-]{1,64} (it is the kernel's machine id by default)."
  }
}

variable "vpc_id" {
  description = "VPC of the security group."
  type        = string
}

variable "subnet_id" {
  description = "Subnet of the instance (a public one, for the relay to be reachable from relay_allowed_cidrs)."
  type        = string
}

variable "relay_allowed_cidrs" {
  description = "Who may reach the relay's port (dashboard, fleet API, kernels' tunnels): CIDR blocks. The only inbound rule."
  type        = list(string)
}

variable "relay_port" {
  description = "TCP port the relay listens on (clove relay --listen 0.0.0.0:PORT)."
  type        = number
  default     = 8443
  validation {
    condition     = var.relay_port > 1023 && var.relay_port < 65536
    error_message = "relay_port must be an unprivileged port (1024-65535): the relay runs as a plain user."
  }
}

variable "clove_repo" {
  description = "Git URL of the Clove sources the instance builds (git clone), e.g. your fork or mirror."
  type        = string
}

variable "clove_version" {
  description = "Branch or tag of clove_repo to build."
  type        = string
  default     = "main"
}

variable "machine_id" {
  description = "The kernel's machine id at the relay (clove kernel --machine-id). Default: name."
  type        = string
  default     = null
  validation {
    condition     = var.machine_id == null || can(regex("^[A-Za-z0-9_-]{1,64}$", var.machine_id))
    error_message = "machine_id must match [A-Za-z0-9_-]{1,64}."
  }
}

variable "instance_type" {
  description = "EC2 instance type (2 vCPUs and 4 GiB are enough to build Clove and run a few dozen agents)."
  type        = string
  default     = "t3.medium"
}

variable "ami_id" {
  description = "AMI to boot. Default: the latest official Debian 12 (bookworm) amd64 image."
  type        = string
  default     = null
}

variable "key_name" {
  description = "EC2 key pair for SSH (no inbound SSH rule is created: add one, or use SSM Session Manager)."
  type        = string
  default     = null
}

variable "iam_instance_profile" {
  description = "Instance profile, e.g. one with AmazonSSMManagedInstanceCore for Session Manager access."
  type        = string
  default     = null
}

variable "root_volume_gb" {
  description = "Size of the root volume in GiB (agents' state and logs live under /var/lib/clove)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to everything the module creates."
  type        = map(string)
  default     = {}
}
