output "instance_id" {
  description = "The EC2 instance running the kernel and the relay."
  value       = aws_instance.clove.id
}

output "public_ip" {
  description = "Public address of the instance (empty in a subnet without public IPs)."
  value       = aws_instance.clove.public_ip
}

output "private_ip" {
  description = "Private address of the instance."
  value       = aws_instance.clove.private_ip
}

output "security_group_id" {
  description = "The relay's security group (its port only)."
  value       = aws_security_group.relay.id
}

output "relay_url" {
  description = "Where other kernels dial the relay (clove kernel --relay) and browsers reach the fleet dashboard."
  value       = "http://${coalesce(aws_instance.clove.public_ip, aws_instance.clove.private_ip)}:${var.relay_port}"
}

output "machine_id" {
  description = "The instance's kernel at the relay: /api/v1/machines/<machine_id>/…"
  value       = local.machine_id
}
