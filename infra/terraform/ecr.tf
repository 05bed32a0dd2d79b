# The registry the build-image action pushes serving images to. Tags are immutable: a version
# tag, once pushed, always names the same image (deploys pin the digest anyway, docs/deploy.md).

resource "aws_ecr_repository" "model" {
  name                 = var.ecr_repository_name
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.wms.arn
  }
}

# Tagged images are versions someone may roll back to and are kept; untagged ones (layers of
# interrupted pushes, manifests no tag points to) are pruned down to the newest N.
resource "aws_ecr_lifecycle_policy" "model" {
  repository = aws_ecr_repository.model.name

  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the newest ${var.ecr_keep_untagged} untagged images"
      selection = {
        tagStatus   = "untagged"
        countType   = "imageCountMoreThan"
        countNumber = var.ecr_keep_untagged
      }
      action = { type = "expire" }
    }]
  })
}
