# The EKS cluster `wms deploy` puts model versions on (one namespace per version, a system
# namespace for the stable entry points; docs/deploy.md). Authentication mode API: who may do
# what is declared here as access entries, not in the aws-auth ConfigMap.

resource "aws_iam_role" "cluster" {
  name               = "${local.cluster_name}-cluster"
  assume_role_policy = data.aws_iam_policy_document.eks_trust.json
}

data "aws_iam_policy_document" "eks_trust" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]

    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

# Created before the cluster so that its retention and encryption apply from the first line.
resource "aws_cloudwatch_log_group" "eks" {
  name              = "/aws/eks/${local.cluster_name}/cluster"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.wms.arn
}

resource "aws_eks_cluster" "this" {
  name     = local.cluster_name
  version  = var.kubernetes_version
  role_arn = aws_iam_role.cluster.arn

  #checkov:skip=CKV_AWS_38:var.cluster_public_access_cidrs has no default on purpose: the operator chooses it (terraform.tfvars.example explains 0.0.0.0/0 for GitHub-hosted runners, whose addresses are not fixed); every request still needs an IAM identity with an access entry.
  #checkov:skip=CKV_AWS_39:The deploy workflow runs on GitHub-hosted runners, which reach the API server over the internet; access is limited to var.cluster_public_access_cidrs and every request is IAM-authenticated. Set endpoint_public_access = false when the runners sit inside the VPC.
  vpc_config {
    subnet_ids              = aws_subnet.private[*].id
    endpoint_private_access = true
    endpoint_public_access  = true
    public_access_cidrs     = var.cluster_public_access_cidrs
  }

  access_config {
    authentication_mode = "API"
    # Whoever runs `terraform apply` gets cluster admin, so the first `helm install` works.
    bootstrap_cluster_creator_admin_permissions = true
  }

  encryption_config {
    resources = ["secrets"]

    provider {
      key_arn = aws_kms_key.wms.arn
    }
  }

  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  depends_on = [
    aws_iam_role_policy_attachment.cluster,
    aws_cloudwatch_log_group.eks,
  ]
}

# --- Nodes -----------------------------------------------------------------------------------

resource "aws_iam_role" "node" {
  name               = "${local.cluster_name}-node"
  assume_role_policy = data.aws_iam_policy_document.node_trust.json
}

data "aws_iam_policy_document" "node_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
  ])

  role       = aws_iam_role.node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.value}"
}

# IMDSv2 only, and one network hop: pods cannot borrow the node's role through the instance
# metadata service (they get their own through EKS Pod Identity); root volumes are encrypted.
resource "aws_launch_template" "node" {
  name_prefix = "${local.cluster_name}-node-"

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = 50
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${local.cluster_name}-node" }
  }
}

# On-demand: the floor that keeps the promoted versions serving when spot capacity goes away.
resource "aws_eks_node_group" "on_demand" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "on-demand"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = aws_subnet.private[*].id
  capacity_type   = "ON_DEMAND"
  instance_types  = var.on_demand_instance_types

  launch_template {
    id      = aws_launch_template.node.id
    version = aws_launch_template.node.latest_version
  }

  scaling_config {
    min_size     = var.on_demand_size.min
    desired_size = var.on_demand_size.desired
    max_size     = var.on_demand_size.max
  }

  update_config {
    max_unavailable = 1
  }

  labels = { "wms.io/capacity" = "on-demand" }

  # The cluster autoscaler (or Karpenter) owns desired_size after the first apply.
  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

# Spot: cheap burst capacity (the seed's cost risk). EKS spreads it over the instance types and
# drains nodes on an interruption notice; the PodDisruptionBudget of every version
# (maxUnavailable 1) keeps the drain gradual.
resource "aws_eks_node_group" "spot" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "spot"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = aws_subnet.private[*].id
  capacity_type   = "SPOT"
  instance_types  = var.spot_instance_types

  launch_template {
    id      = aws_launch_template.node.id
    version = aws_launch_template.node.latest_version
  }

  scaling_config {
    min_size     = var.spot_size.min
    desired_size = var.spot_size.desired
    max_size     = var.spot_size.max
  }

  update_config {
    max_unavailable = 1
  }

  labels = { "wms.io/capacity" = "spot" }

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

# --- Add-ons ---------------------------------------------------------------------------------

resource "aws_eks_addon" "this" {
  for_each = toset(["vpc-cni", "kube-proxy", "coredns", "eks-pod-identity-agent"])

  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = each.value
  resolve_conflicts_on_update = "OVERWRITE"

  # coredns needs nodes to become healthy.
  depends_on = [aws_eks_node_group.on_demand]
}

# --- Who may use the cluster -----------------------------------------------------------------

# The deploy workflow's role. `wms deploy` creates and deletes a namespace per model version, so
# it needs cluster scope (docs/deploy.md lists the verbs). For a narrower grant, replace the policy
# association with kubernetes_groups on the entry and bind those groups to your own ClusterRole.
resource "aws_eks_access_entry" "deploy" {
  cluster_name  = aws_eks_cluster.this.name
  principal_arn = aws_iam_role.deploy.arn
  type          = "STANDARD"
}

resource "aws_eks_access_policy_association" "deploy" {
  cluster_name  = aws_eks_cluster.this.name
  principal_arn = aws_iam_role.deploy.arn
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"

  access_scope {
    type = "cluster"
  }

  depends_on = [aws_eks_access_entry.deploy]
}

# MLflow's pods get the MLflow role (S3 artifacts, the database secret) through EKS Pod Identity:
# no keys in the chart, no OIDC provider for the cluster.
resource "aws_eks_pod_identity_association" "mlflow" {
  cluster_name    = aws_eks_cluster.this.name
  namespace       = var.mlflow_namespace
  service_account = var.mlflow_service_account
  role_arn        = aws_iam_role.mlflow.arn
}
