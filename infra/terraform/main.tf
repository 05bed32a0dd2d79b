# wms on AWS: the network, the EKS cluster that serves model versions (one namespace each), the ECR
# repository the serving images go to, the S3 buckets for DVC data and MLflow artifacts, the MySQL
# database behind MLflow, and the GitHub OIDC roles the workflows assume (no long-lived keys).
#
# Plain resources only (no registry modules), so everything the stack creates is readable here.
# `make test` checks this directory offline: `terraform fmt -check`, Terraform's own configuration
# loader (syntax, block structure, every reference resolves, every function exists) and checkov;
# `terraform validate` and `plan` need the AWS provider, which `terraform init` downloads (see
# tests/it/infra.rs and infra/README.md).

terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }

  # Keep state remote and locked in real use, e.g. (create the bucket first):
  # backend "s3" {
  #   bucket       = "my-terraform-state"
  #   key          = "wms/terraform.tfstate"
  #   region       = "eu-central-1"
  #   use_lockfile = true
  #   encrypt      = true
  # }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      "app.kubernetes.io/part-of" = "wms"
      "managed-by"                = "terraform"
    })
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:The stack uses only the first var.az_count zones in name order (local.azs), so a zone AWS adds later cannot enlarge the set; subnets are created per entry of local.azs, not per zone returned.
  state = "available"

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  azs        = slice(data.aws_availability_zones.available.names, 0, var.az_count)

  # Bucket names are global: the account id keeps them unique without a random suffix.
  dvc_bucket    = "${var.name}-dvc-${local.account_id}-${var.region}"
  mlflow_bucket = "${var.name}-mlflow-${local.account_id}-${var.region}"
  logs_bucket   = "${var.name}-s3-access-logs-${local.account_id}-${var.region}"

  cluster_name = "${var.name}-eks"
}

# One customer-managed key for the stack's data at rest: S3 objects, ECR images, RDS storage and
# Performance Insights, the RDS master password secret, Kubernetes secrets and the CloudWatch logs.
resource "aws_kms_key" "wms" {
  description             = "${var.name}: data at rest (S3, ECR, RDS, EKS secrets, logs)"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "wms" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.wms.key_id
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:This is a KMS key policy: Resource "*" in a key policy means this key only, and the account-root statement is the AWS default that lets IAM policies grant use of the key.
  #checkov:skip=CKV_AWS_111:Same key policy: "*" is this key; write use is granted per role in iam.tf, scoped with kms:ViaService.
  #checkov:skip=CKV_AWS_356:Same key policy: a key policy's Resource can only be "*" (the key it is attached to).
  # The account administers the key; services and roles get their use through IAM policies.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # CloudWatch Logs encrypts the VPC flow log, EKS control plane and RDS log groups with it,
  # and only for log groups of this account and region.
  statement {
    sid = "CloudWatchLogs"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*"]
    }
  }
}
