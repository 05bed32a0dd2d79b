# Roles the workflows of ONE GitHub repository assume with the job's OIDC token (the
# aws-credentials action, `wms aws assume-role`): no access keys exist anywhere. Each role's
# trust names the exact token subjects it accepts, so another repository, another branch or an
# unprotected environment cannot assume it. And the role MLflow's pods use (EKS Pod Identity).

resource "aws_iam_openid_connect_provider" "github" {
  count = var.github_oidc_provider_arn == "" ? 1 : 0

  url            = "https://token.actions.githubusercontent.com"
  client_id_list = ["sts.amazonaws.com"]
}

locals {
  github_oidc_provider_arn = var.github_oidc_provider_arn != "" ? var.github_oidc_provider_arn : aws_iam_openid_connect_provider.github[0].arn

  # GitHub's `sub` claim: repo:OWNER/NAME:ref:refs/heads/BRANCH for push jobs without an
  # environment, repo:OWNER/NAME:pull_request for pull_request jobs, and
  # repo:OWNER/NAME:environment:ENV for any job that declares `environment: ENV`.
  train_subjects = concat(
    ["repo:${var.github_repository}:ref:refs/heads/${var.github_branch}"],
    var.train_on_pull_requests ? ["repo:${var.github_repository}:pull_request"] : [],
  )
  deploy_subjects = ["repo:${var.github_repository}:environment:${var.deploy_environment}"]
}

data "aws_iam_policy_document" "github_trust" {
  for_each = {
    train  = local.train_subjects
    deploy = local.deploy_subjects
  }

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.github_oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:aud"
      values   = ["sts.amazonaws.com"]
    }

    # Exact matches, no wildcards: `repo:acme/model:*` would also admit every branch and
    # every environment of the repository.
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:sub"
      values   = each.value
    }
  }
}

# --- train: the DVC remote -------------------------------------------------------------------

# Train jobs pull the data set and (on the main branch) push new data. MLflow is reached over
# HTTPS with the tracking server's own credentials (MLFLOW_TRACKING_USERNAME/PASSWORD): its
# artifacts go through the server's artifact proxy, so this role holds no MLflow bucket rights.
# No s3:DeleteObject: DVC never deletes from a remote during push or pull.
resource "aws_iam_role" "train" {
  name                 = "${var.name}-github-train"
  description          = "Assumed by ${var.github_repository} train jobs through GitHub OIDC"
  assume_role_policy   = data.aws_iam_policy_document.github_trust["train"].json
  max_session_duration = 3600 * 6
}

resource "aws_iam_role_policy" "train" {
  name   = "dvc-remote"
  role   = aws_iam_role.train.id
  policy = data.aws_iam_policy_document.train.json
}

data "aws_iam_policy_document" "train" {
  statement {
    sid       = "ListDvcRemote"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.data["dvc"].arn]
  }

  statement {
    sid       = "ReadWriteDvcObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = ["${aws_s3_bucket.data["dvc"].arn}/*"]
  }

  statement {
    sid       = "UseBucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.wms.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

# --- deploy: ECR push and the EKS API ---------------------------------------------------------

# Deploy jobs push the serving image and talk to the cluster. Kubernetes permissions come from
# the access entry in eks.tf; IAM only lets the role find the cluster.
resource "aws_iam_role" "deploy" {
  name                 = "${var.name}-github-deploy"
  description          = "Assumed by ${var.github_repository} jobs in environment ${var.deploy_environment} through GitHub OIDC"
  assume_role_policy   = data.aws_iam_policy_document.github_trust["deploy"].json
  max_session_duration = 3600
}

resource "aws_iam_role_policy" "deploy" {
  name   = "ecr-push-eks-describe"
  role   = aws_iam_role.deploy.id
  policy = data.aws_iam_policy_document.deploy.json
}

data "aws_iam_policy_document" "deploy" {
  #checkov:skip=CKV_AWS_356:ecr:GetAuthorizationToken has no resource type; AWS requires Resource "*" for it, and the token only works with the repository permissions below.
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "EcrPushPull"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:CompleteLayerUpload",
      "ecr:DescribeImages",
      "ecr:GetDownloadUrlForLayer",
      "ecr:InitiateLayerUpload",
      "ecr:PutImage",
      "ecr:UploadLayerPart",
    ]
    resources = [aws_ecr_repository.model.arn]
  }

  statement {
    sid       = "EcrKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.wms.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ecr.${var.region}.amazonaws.com"]
    }
  }

  statement {
    sid       = "FindCluster"
    actions   = ["eks:DescribeCluster"]
    resources = [aws_eks_cluster.this.arn]
  }
}

# --- MLflow's pods ---------------------------------------------------------------------------

resource "aws_iam_role" "mlflow" {
  name               = "${var.name}-mlflow"
  description        = "MLflow tracking server pods (EKS Pod Identity): artifacts bucket and database secret"
  assume_role_policy = data.aws_iam_policy_document.pod_identity_trust.json
}

data "aws_iam_policy_document" "pod_identity_trust" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]

    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role_policy" "mlflow" {
  name   = "artifacts-and-db-secret"
  role   = aws_iam_role.mlflow.id
  policy = data.aws_iam_policy_document.mlflow.json
}

data "aws_iam_policy_document" "mlflow" {
  statement {
    sid       = "ListArtifacts"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.data["mlflow"].arn]
  }

  # The artifact proxy uploads, serves and (on `mlflow gc`) deletes run artifacts.
  statement {
    sid       = "ReadWriteArtifacts"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = ["${aws_s3_bucket.data["mlflow"].arn}/*"]
  }

  # Lets a secrets operator running as this service account (e.g. the Secrets Store CSI driver)
  # read the RDS-managed password; infra/helm/mlflow/values.yaml reads it from a Kubernetes Secret.
  statement {
    sid       = "DatabaseSecret"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [aws_db_instance.mlflow.master_user_secret[0].secret_arn]
  }

  statement {
    sid       = "UseKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.wms.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com", "secretsmanager.${var.region}.amazonaws.com"]
    }
  }
}
